"""Generation in this server: its own engine core, and stream logs in its memory.

The default `Backend` of the text runtime (`redis/backend.py` is the other). A stream's
generation runs as a task that appends every delta of its request to the stream's log;
the clients only read the log, so another connection can read the same stream later.
"""

from __future__ import annotations

import asyncio
import logging
import time

from ...events import FinishReason, error_message
from ..drivers.client import EngineClient
from ..record import RequestRecord, read_deltas
from ..request import TextRequest
from ..responses import final_parameters
from ..sample.generation import Delta
from .event_log import LogEntry, MemoryEventLog, MemoryStream

logger = logging.getLogger(__name__)

STOP_WAIT_S = 5.0


class LocalBackend:
    """This process's engine (through its `EngineClient`) and its streams' logs."""

    def __init__(self, client: EngineClient, log: MemoryEventLog, timeout_s: float) -> None:
        self.client = client
        self.log = log
        self.timeout_s = timeout_s
        self._live: dict[str, tuple[MemoryStream, RequestRecord]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(self, request: TextRequest) -> RequestRecord:
        """Start a generation whose deltas go to its record (ServerAtCapacity...)."""
        deadline = time.monotonic() + self.timeout_s
        return self.client.submit(request.prompt_ids, request.params, deadline)

    def cancel_record(self, record: RequestRecord) -> None:
        """Cancel a generation; its last delta says `cancelled`."""
        self.client.cancel(record)

    async def start(self, stream_id: str, request: TextRequest) -> MemoryStream:
        """Start a generation that writes the log of `stream_id`."""
        record = await self.submit(request)
        try:
            stream = self.log.open(stream_id, request.params.logprobs)
        except BaseException:
            self.client.cancel(record)
            raise
        self._live[stream_id] = (stream, record)
        task = asyncio.create_task(self._produce(stream, record))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return stream

    def cancel(self, stream_id: str) -> None:
        """Cancel a stream's generation if it still runs; its log ends `cancelled`."""
        live = self._live.get(stream_id)
        if live is not None:
            self.client.cancel(live[1])

    async def stop(self) -> None:
        """Stop the engine (which ends every generation), let the producers log their
        final entries, then cancel any that remain."""
        await self.client.stop()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=STOP_WAIT_S)
        leftover = list(self._tasks)
        for task in leftover:
            task.cancel()
        await asyncio.gather(*leftover, return_exceptions=True)

    async def _produce(self, stream: MemoryStream, record: RequestRecord) -> None:
        """Append every delta of a generation to its log, whatever happens to the readers."""
        try:
            # One entry per engine delta: a stream's event boundaries are then the same
            # whenever it runs (the engine groups tokens under load: stream_interval).
            async for delta in read_deltas(record, self.client.cancel, coalesce=False):
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
