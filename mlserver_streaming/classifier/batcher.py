"""Micro-batching: rows from concurrent requests and streams share one estimator call.

MLServer's adaptive batching wraps only `predict` and refuses streams, so the classifier
batches below the request level instead: every caller submits its rows and awaits a
future; one loop collects rows for at most `max_batch_time` (or until `max_batch_size`
rows are waiting), scores them in one call (the scoring function runs it off the event
loop), and splits the result back by the callers' row counts. An estimator call costs a
fixed overhead plus a little per row, so single-row callers gain the most.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from itertools import accumulate, pairwise
from typing import Generic, Protocol, Self, TypeVar

import numpy as np

from ..errors import HTTP_UNAVAILABLE, StreamingError

logger = logging.getLogger(__name__)


class RowResult(Protocol):
    """What a scoring function returns: one entry per row, sliceable by rows."""

    def __len__(self) -> int: ...

    def __getitem__(self, rows: slice) -> Self: ...


ResultT = TypeVar("ResultT", bound=RowResult)


class BatcherStopped(StreamingError):
    """The model was unloaded while rows were waiting; retrying reaches the new instance."""

    retryable = True

    def __init__(self, msg: str):
        super().__init__(msg, HTTP_UNAVAILABLE)


def split_by_sizes(result: ResultT, sizes: Sequence[int]) -> list[ResultT]:
    """Cut one batch's result back into consecutive parts of `sizes` rows."""
    if len(result) != sum(sizes):
        raise ValueError(f"result has {len(result)} rows, callers sent {sum(sizes)}")
    bounds = pairwise(accumulate(sizes, initial=0))
    return [result[start:stop] for start, stop in bounds]


@dataclass
class _Waiting:
    rows: np.ndarray
    future: asyncio.Future


class MicroBatcher(Generic[ResultT]):
    """Scores rows from many callers together; start it in `load`, stop it in `unload`."""

    def __init__(
        self,
        score: Callable[[np.ndarray], Awaitable[ResultT]],
        max_batch_size: int,
        max_batch_time_s: float,
    ):
        self._score = score
        self._max_size = max_batch_size
        self._max_time = max_batch_time_s
        self._queue: asyncio.Queue[_Waiting] = asyncio.Queue()
        self._carry: _Waiting | None = None
        self._batch: list[_Waiting] = []  # being collected or scored: stop() must answer it
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        """Start the batching loop on the running event loop."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="micro-batcher")

    async def stop(self) -> None:
        """Stop the loop; callers still waiting get a retryable error."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        waiting = self._batch + ([self._carry] if self._carry else [])
        self._batch, self._carry = [], None
        while not self._queue.empty():
            waiting.append(self._queue.get_nowait())
        _fail(waiting, BatcherStopped("the model was unloaded; retry."))

    async def submit(self, rows: np.ndarray) -> ResultT:
        """Score `rows` (shape [n, F]) together with whatever else is waiting."""
        if self._task is None:
            raise BatcherStopped("the model is not loaded (its batcher is stopped); retry.")
        future: asyncio.Future[ResultT] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Waiting(rows, future))
        return await future

    async def _run(self) -> None:
        while True:
            await self._collect()
            try:
                await self._score_batch(self._batch)
            except Exception:  # noqa: BLE001 - the loop must survive any one batch
                logger.exception("micro-batch of %d callers failed", len(self._batch))
            self._batch = []

    async def _collect(self) -> None:
        """The first waiting caller plus whoever joins within the time and size limits."""
        first, self._carry = self._carry or await self._queue.get(), None
        self._batch, size = [first], len(first.rows)
        deadline = asyncio.get_running_loop().time() + self._max_time
        while size < self._max_size:
            try:
                if self._queue.empty():
                    async with asyncio.timeout_at(deadline):
                        item = await self._queue.get()
                else:
                    item = self._queue.get_nowait()
            except TimeoutError:
                break
            if size + len(item.rows) > self._max_size:
                self._carry = item  # it opens the next batch rather than overfilling this one
                break
            self._batch.append(item)
            size += len(item.rows)

    async def _score_batch(self, batch: list[_Waiting]) -> None:
        live = [item for item in batch if not item.future.done()]  # skip cancelled callers
        if not live:
            return
        rows = live[0].rows if len(live) == 1 else np.concatenate([i.rows for i in live])
        try:
            result = await self._score(rows)
            parts = split_by_sizes(result, [len(item.rows) for item in live])
        except Exception as err:  # noqa: BLE001 - every caller learns why its rows failed
            _fail(live, err)
            return
        for item, part in zip(live, parts, strict=True):
            if not item.future.done():
                item.future.set_result(part)


def _fail(waiting: list[_Waiting], err: BaseException) -> None:
    for item in waiting:
        if not item.future.done():
            item.future.set_exception(err)
