"""The n choices of one request as one stream of deltas, and the SSE framing around it.

Each choice's deltas are read by a task of its own (`TextGenerator.deltas`) into one queue,
so choices interleave as they are generated. While nothing arrives for `keepalive` seconds
(e.g. queued behind other requests), `next` says so and the route writes an SSE comment,
which clients ignore and idle-timeout proxies count as traffic. Closing the streams cancels
the reading tasks, and leaving `deltas` early cancels each unfinished sequence (disconnect).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import orjson

from ..events import FinishReason
from ..text.engine_client import RequestRecord
from ..text.generation import Delta

if TYPE_CHECKING:
    from ..text.runtime import TextGenerator

logger = logging.getLogger(__name__)

KEEPALIVE_ENV = "MLSERVER_STREAMING_SSE_KEEPALIVE_S"
"""Seconds of silence before a `: keep-alive` comment; 0 switches them off."""
DEFAULT_KEEPALIVE_S = 15.0

DONE = b"data: [DONE]\n\n"
KEEPALIVE = b": keep-alive\n\n"
_WAKE = object()


def keepalive_interval() -> float | None:
    """The keep-alive interval from the environment (None: off)."""
    raw = os.environ.get(KEEPALIVE_ENV, "")
    try:
        seconds = float(raw) if raw.strip() else DEFAULT_KEEPALIVE_S
    except ValueError:
        logger.warning("%s=%r is not a number; using %s", KEEPALIVE_ENV, raw, DEFAULT_KEEPALIVE_S)
        seconds = DEFAULT_KEEPALIVE_S
    return seconds if seconds > 0 else None


def sse(obj: Any) -> bytes:
    """One SSE event holding a JSON object."""
    return b"data: " + orjson.dumps(obj) + b"\n\n"


class ChoiceStreams:
    """(choice index, delta) pairs of n submitted generations, in arrival order."""

    def __init__(self, model: TextGenerator, records: Sequence[RequestRecord]) -> None:
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._tasks = [
            asyncio.create_task(self._read(index, model, record))
            for index, record in enumerate(records)
        ]

    @classmethod
    async def open(cls, model: TextGenerator, records: Sequence[RequestRecord]) -> ChoiceStreams:
        """Start reading; on return every reader is inside its `deltas`, so `close` cancels."""
        streams = cls(model, records)
        await asyncio.sleep(0)  # one loop pass: each new task runs to its first wait
        return streams

    async def _read(self, index: int, model: TextGenerator, record: RequestRecord) -> None:
        try:
            async for delta in model.deltas(record):
                self._queue.put_nowait((index, delta))
        except Exception as err:  # noqa: BLE001 - a reader must always end its choice
            logger.exception("reading choice %d failed", index)
            failed = Delta(finish_reason=FinishReason.ERROR, error=f"internal error: {err}")
            self._queue.put_nowait((index, failed))

    async def next(self, keepalive: float | None = None) -> tuple[int, Delta] | None:
        """The next delta of any choice; None when `keepalive` seconds passed without one."""
        while True:
            if keepalive is None or not self._queue.empty():
                item = await self._queue.get()
            else:
                loop = asyncio.get_running_loop()
                timer = loop.call_later(keepalive, self._queue.put_nowait, _WAKE)
                try:
                    item = await self._queue.get()
                finally:
                    timer.cancel()
                if item is _WAKE:
                    return None
            if item is not _WAKE:  # else a wake-up that fired just as a delta came: skip it
                return item

    async def collect(self) -> list[list[Delta]]:
        """Every choice's deltas up to its final one (unary requests)."""
        deltas: list[list[Delta]] = [[] for _ in self._tasks]
        remaining = len(self._tasks)
        while remaining:
            index, delta = await self._next_delta()
            deltas[index].append(delta)
            remaining -= delta.finish_reason is not None
        return deltas

    async def _next_delta(self) -> tuple[int, Delta]:
        item = await self.next()
        assert item is not None  # no keep-alive asked for
        return item

    def close(self) -> None:
        """Stop reading; every unfinished choice's sequence is cancelled."""
        for task in self._tasks:
            task.cancel()
