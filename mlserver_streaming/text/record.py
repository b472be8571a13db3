"""What the runtime keeps of one submitted request, and how a reader takes its deltas.

Every backend (this server's engine, Redis workers) hands its deltas to the record's queue;
the V2 and OpenAI routes read them from there.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from ..events import FinishReason
from .drivers.metrics import RequestTiming
from .sample.generation import Delta, merge


@dataclass(eq=False)
class RequestRecord:
    """What the runtime keeps of one request: its final event's fields and its deltas."""

    request_id: int
    prompt_tokens: int
    seed: int
    deltas: asyncio.Queue[Delta] = field(default_factory=asyncio.Queue)
    timing: RequestTiming = field(default_factory=lambda: RequestTiming(time.monotonic()))
    completion_tokens: int = 0
    finish_reason: FinishReason | None = None
    stream_id: str = ""
    """The stream whose log it writes (Redis mode); empty for this process's engine."""
    deadline: float | None = None
    """When the request must have ended (`time.monotonic()`): its reader waits no longer
    than that and `DEADLINE_GRACE_S`, whatever happens to the engine."""

    def account(self, delta: Delta) -> None:
        """Count a delta's tokens and note the end, before its reader gets it."""
        self.completion_tokens += len(delta.token_ids)
        if delta.finish_reason is not None:
            self.finish_reason = delta.finish_reason


DEADLINE_GRACE_S = 5.0
"""How long past its deadline a reader waits for the engine's own `timeout` delta."""


async def next_delta(record: RequestRecord) -> Delta:
    """The record's next delta; past its deadline and the grace, a `timeout` delta of our
    own (the engine would have sent one: it lost the request)."""
    if record.deadline is None:
        return await record.deltas.get()
    try:
        async with asyncio.timeout(record.deadline + DEADLINE_GRACE_S - time.monotonic()):
            return await record.deltas.get()
    except TimeoutError:
        message = "no answer from the engine past the request's deadline"
        return Delta(finish_reason=FinishReason.TIMEOUT, error=message, retryable=True)


async def read_deltas(
    record: RequestRecord, cancel: Callable[[RequestRecord], None], coalesce: bool = True
) -> AsyncIterator[Delta]:
    """A request's deltas up to its final one (which has a finish reason); leaving early
    (a disconnect) cancels it. `coalesce` merges the deltas that wait into one; without
    it each engine delta comes on its own."""
    queue = record.deltas
    finished = False
    try:
        while not finished:
            # Under load several deltas may wait: send them as one event, not a backlog.
            pending = [await next_delta(record)]
            while coalesce and pending[-1].finish_reason is None and not queue.empty():
                pending.append(queue.get_nowait())
            delta = pending[0] if len(pending) == 1 else merge(pending)
            finished = delta.finish_reason is not None
            yield delta
    finally:
        if not finished:
            cancel(record)
