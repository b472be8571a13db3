"""Producer/consumer split of text streams: generation appends to a log, clients read it.

Each new stream's generation runs as a task that appends every delta to the stream's log
(`event_log.py`); the client's connection only reads the log, from an index, so another
connection can read the same stream after a disconnect (`resume`). Without `background` a
disconnect of the connection that started the stream cancels its generation, as before;
with it, only `cancel` does.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Protocol

from mlserver.errors import MLServerError
from mlserver.types import InferenceRequest, InferenceResponse

from ..errors import InvalidParameter
from ..events import (
    EVENT_INDEX,
    REQUEST_INDEX,
    FinishReason,
    ModelIdentity,
    ParamValue,
    error_event,
    error_message,
    event,
    final_event,
)
from ..params import request_parameters
from .engine_client import RequestRecord
from .event_log import EventLog, LogEntry, StreamLog
from .generation import Delta
from .prompt import decode_prompt
from .request import RequestParser, TextRequest
from .responses import delta_outputs, final_parameters, merge
from .stream_params import StreamParams, split_stream_params

logger = logging.getLogger(__name__)

EMPTY_OUTPUTS = delta_outputs(Delta(), None)
"""The outputs of an error event: empty text and no tokens."""


class Generator(ModelIdentity, Protocol):
    """What the streams need of the text runtime."""

    @property
    def requests(self) -> RequestParser: ...

    def submit(self, request: TextRequest) -> RequestRecord: ...

    def deltas(self, record: RequestRecord, coalesce: bool = True) -> AsyncIterator[Delta]: ...

    def cancel(self, record: RequestRecord) -> None: ...


def entry_event(
    model: ModelIdentity, entry: LogEntry, index: int, logprobs: int | None, **tags: ParamValue
) -> InferenceResponse:
    """The V2 event of a log entry, exactly as first sent, with this connection's tags."""
    outputs = delta_outputs(entry.delta, logprobs)
    reason = entry.delta.finish_reason
    if reason is None:
        return event(model, outputs, **{EVENT_INDEX: index}, **tags)
    return final_event(model, reason, outputs, **entry.final_params, **{EVENT_INDEX: index}, **tags)


def stream_key(request_id: str | None, tags: dict[str, ParamValue]) -> str:
    """A stream's log id: the request id (the response `id`); turn n > 0 of a gRPC call,
    whose requests all share the first one's id, is `<id>:<n>`."""
    turn = tags.get(REQUEST_INDEX, 0)
    return f"{request_id or ''}:{turn}" if turn else request_id or ""


class Streams:
    """The text runtime's streams: their logs, and the generation task behind each live one."""

    def __init__(self, model: Generator, log: EventLog) -> None:
        self.model = model
        self.log = log
        self._live: dict[str, tuple[StreamLog, RequestRecord]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def stream_one(
        self, payload: InferenceRequest, tags: dict[str, ParamValue]
    ) -> AsyncIterator[InferenceResponse]:
        """The events of one streamed request: a new stream's, or an existing one's after
        `starting_after` (resume, cancel). A refusal is one error event with index 0."""
        try:
            params, stream, record = self._open(payload, tags)
            entries = stream.entries(params.starting_after)
        except MLServerError as err:
            yield error_event(self.model, err, EMPTY_OUTPUTS, **{EVENT_INDEX: 0}, **tags)
            return
        try:
            async for index, entry in entries:
                yield entry_event(self.model, entry, index, stream.logprobs, **tags)
        except MLServerError as err:  # found while reading: still the stream's next event
            yield error_event(
                self.model, err, EMPTY_OUTPUTS, **{EVENT_INDEX: stream.length}, **tags
            )
        finally:
            if record is not None and not params.background and not stream.ended:
                self.model.cancel(record)  # the client left: free its slot, as before

    async def predict(self, payload: InferenceRequest) -> InferenceResponse | None:
        """A unary resume or cancel: the rest of that stream as one final event; None for
        a new request (which unary predict runs without a log)."""
        params, _ = split_stream_params(request_parameters(payload))
        if params.follows is None:
            if params.background:
                raise InvalidParameter("background applies to streamed requests only.")
            return None
        stream = self._follow(params)
        entries = [item async for item in stream.entries(params.starting_after)]
        index, last = entries[-1]
        whole = LogEntry(merge([entry.delta for _, entry in entries]), last.final_params)
        return entry_event(self.model, whole, index, stream.logprobs)

    def find(self, stream_id: str) -> StreamLog:
        """The log of a live or retained stream (StreamNotFound otherwise)."""
        return self.log.get(stream_id)

    def cancel(self, stream_id: str) -> StreamLog:
        """Cancel a stream's generation (if still running); its log ends `cancelled`."""
        stream = self.log.get(stream_id)
        live = self._live.get(stream_id)
        if live is not None and live[0] is stream:
            self.model.cancel(live[1])
        return stream

    async def stop(self) -> None:
        """At unload, after the engine stopped (which ends every generation): let the
        producers log their final entries, then cancel any that remain."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=5)
        leftover = list(self._tasks)
        for task in leftover:
            task.cancel()
        await asyncio.gather(*leftover, return_exceptions=True)

    def _open(
        self, payload: InferenceRequest, tags: dict[str, ParamValue]
    ) -> tuple[StreamParams, StreamLog, RequestRecord | None]:
        params, rest = split_stream_params(request_parameters(payload))
        if params.follows is not None:
            return params, self._follow(params), None
        request = self.model.requests.build(decode_prompt(payload), rest)
        record = self.model.submit(request)
        stream = self.log.open(stream_key(payload.id, tags), request.params.logprobs)
        self._live[stream.stream_id] = (stream, record)
        task = asyncio.create_task(self._produce(stream, record))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return params, stream, record

    def _follow(self, params: StreamParams) -> StreamLog:
        if params.cancel is not None:
            return self.cancel(params.cancel)
        assert params.resume is not None
        return self.find(params.resume)

    async def _produce(self, stream: StreamLog, record: RequestRecord) -> None:
        """Append every delta of a generation to its log, whatever happens to the readers."""
        try:
            # One entry per engine delta: a stream's event boundaries are then the same
            # whenever it runs (the engine groups tokens under load: stream_interval).
            async for delta in self.model.deltas(record, coalesce=False):
                final = final_parameters(record, delta) if delta.finish_reason else {}
                stream.append(LogEntry(delta, final))
        except BaseException as err:  # readers must never wait for a final entry forever
            if not stream.ended:
                cancelled = isinstance(err, asyncio.CancelledError)
                reason = FinishReason.CANCELLED if cancelled else FinishReason.ERROR
                delta = Delta(finish_reason=reason, error=None if cancelled else error_message(err))
                stream.append(LogEntry(delta, final_parameters(record, delta)))
            if not isinstance(err, Exception):
                raise
            logger.exception("generation of stream %r failed", stream.stream_id)
        finally:
            if self._live.get(stream.stream_id, (None,))[0] is stream:
                del self._live[stream.stream_id]
