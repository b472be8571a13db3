"""Producer/consumer split of text streams: generation appends to a log, clients read it.

A new stream's generation is started on the runtime's `Backend` and writes the stream's
log (`event_log.py`); the client's connection only reads the log, from an index, so another
connection (on any front end, in Redis mode) can read the same stream after a disconnect
(`resume`). Without `background` a disconnect of the connection that started the stream
cancels its generation; with it, only `cancel` does.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Protocol

from mlserver.errors import MLServerError
from mlserver.types import InferenceRequest, InferenceResponse

from ...errors import InvalidParameter
from ...events import (
    EVENT_INDEX,
    REQUEST_INDEX,
    ModelIdentity,
    ParamValue,
    error_event,
    event,
    final_event,
)
from ...params import request_parameters
from ..prompt import decode_prompt
from ..record import RequestRecord
from ..request import RequestParser, TextRequest
from ..responses import delta_outputs
from ..sample.generation import Delta, merge
from .event_log import EventLog, LogEntry, StreamLog
from .params import StreamParams, check_stream_id, split_stream_params

EMPTY_OUTPUTS = delta_outputs(Delta(), None)
"""The outputs of an error event: empty text and no tokens."""


class Backend(Protocol):
    """Where generation runs: this server's engine (`streams/local.py`) or Redis workers
    (`redis/backend.py`). Either way a stream's generation writes its log, which `log`
    gives to any reader."""

    @property
    def log(self) -> EventLog: ...

    async def submit(self, request: TextRequest) -> RequestRecord:
        """A generation without a log to resume (unary predict, the OpenAI routes): its
        deltas go to the record's queue."""
        ...

    def cancel_record(self, record: RequestRecord) -> None: ...

    async def start(self, stream_id: str, request: TextRequest) -> StreamLog:
        """A generation that writes the log of `stream_id` (InvalidParameter while a
        stream of that id is live)."""
        ...

    def cancel(self, stream_id: str) -> None:
        """Cancel the generation of a stream, wherever it runs; its log ends `cancelled`."""
        ...

    async def stop(self) -> None: ...


class Generator(ModelIdentity, Protocol):
    """What the streams need of the text runtime."""

    @property
    def requests(self) -> RequestParser: ...


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
    """A stream's log id: the request id (the response `id`, checked as a stream id); turn
    n > 0 of a gRPC call, whose requests all share the first one's id, is `<id>:<n>`."""
    turn = tags.get(REQUEST_INDEX, 0)
    key = check_stream_id("the request id", request_id)
    return f"{key}:{turn}" if turn else key


class Streams:
    """The text runtime's streams: new ones started on its backend, any read from its log."""

    def __init__(self, model: Generator, backend: Backend) -> None:
        self.model = model
        self.backend = backend

    async def stream_one(
        self, payload: InferenceRequest, tags: dict[str, ParamValue]
    ) -> AsyncIterator[InferenceResponse]:
        """The events of one streamed request: a new stream's, or an existing one's after
        `starting_after` (resume, cancel). A refusal is one error event with index 0."""
        try:
            params, stream, started = await self._open(payload, tags)
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
            if started and not params.background and not stream.ended:
                self.backend.cancel(stream.stream_id)  # the client left: free its slot

    async def predict(self, payload: InferenceRequest) -> InferenceResponse | None:
        """A unary resume or cancel: the rest of that stream as one final event; None for
        a new request (which unary predict runs without a log)."""
        params, _ = split_stream_params(request_parameters(payload))
        if params.follows is None:
            if params.background:
                raise InvalidParameter("background applies to streamed requests only.")
            return None
        stream = await self._follow(params)
        entries = [item async for item in stream.entries(params.starting_after)]
        index, last = entries[-1]
        whole = LogEntry(merge([entry.delta for _, entry in entries]), last.final_params)
        return entry_event(self.model, whole, index, stream.logprobs)

    async def find(self, stream_id: str) -> StreamLog:
        """The log of a live or retained stream (StreamNotFound otherwise)."""
        return await self.backend.log.get(stream_id)

    async def cancel(self, stream_id: str) -> StreamLog:
        """Cancel a stream's generation (if still running); its log ends `cancelled`."""
        stream = await self.find(stream_id)
        if not stream.ended:
            self.backend.cancel(stream_id)
        return stream

    async def _open(
        self, payload: InferenceRequest, tags: dict[str, ParamValue]
    ) -> tuple[StreamParams, StreamLog, bool]:
        """(its stream parameters, the log to read, whether this request started it)."""
        params, rest = split_stream_params(request_parameters(payload))
        if params.follows is not None:
            return params, await self._follow(params), False
        request = await self.model.requests.build_async(decode_prompt(payload), rest)
        if not payload.id:  # MLServer mints one for its routes; in-process callers may not
            payload.id = uuid.uuid4().hex
        return params, await self.backend.start(stream_key(payload.id, tags), request), True

    async def _follow(self, params: StreamParams) -> StreamLog:
        if params.cancel is not None:
            return await self.cancel(params.cancel)
        assert params.resume is not None
        return await self.find(params.resume)
