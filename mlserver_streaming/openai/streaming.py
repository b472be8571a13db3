"""The n choices of one request as one stream of deltas.

Each choice's deltas are read by a task of its own (`TextModel.deltas`) into one queue,
so choices interleave as they are generated. Closing the streams cancels the reading
tasks, and leaving `deltas` early cancels each unfinished sequence (disconnect).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from ..errors import client_message
from ..events import FinishReason
from ..text.loaded import TextModel
from ..text.record import RequestRecord
from ..text.sample.generation import Delta

DONE = b"data: [DONE]\n\n"


class ChoiceStreams:
    """(choice index, delta) pairs of n submitted generations, in arrival order."""

    def __init__(self, model: TextModel, records: Sequence[RequestRecord]) -> None:
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._tasks = [
            asyncio.create_task(self._read(index, model, record))
            for index, record in enumerate(records)
        ]

    @classmethod
    async def open(cls, model: TextModel, records: Sequence[RequestRecord]) -> ChoiceStreams:
        """Start reading; on return every reader is inside its `deltas`, so `close` cancels."""
        streams = cls(model, records)
        await asyncio.sleep(0)  # one loop pass: each new task runs to its first wait
        return streams

    async def _read(self, index: int, model: TextModel, record: RequestRecord) -> None:
        try:
            async for delta in model.deltas(record):
                self._queue.put_nowait((index, delta))
        except Exception as err:  # noqa: BLE001 - a reader must always end its choice
            message = client_message(err, f"reading choice {index} failed")
            failed = Delta(finish_reason=FinishReason.ERROR, error=message)
            self._queue.put_nowait((index, failed))

    async def next(self) -> tuple[int, Delta]:
        """The next delta of any choice."""
        return await self._queue.get()

    async def collect(self) -> list[list[Delta]]:
        """Every choice's deltas up to its final one (unary requests)."""
        deltas: list[list[Delta]] = [[] for _ in self._tasks]
        remaining = len(self._tasks)
        while remaining:
            index, delta = await self.next()
            deltas[index].append(delta)
            remaining -= delta.finish_reason is not None
        return deltas

    def close(self) -> None:
        """Stop reading; every unfinished choice's sequence is cancelled."""
        for task in self._tasks:
            task.cancel()
