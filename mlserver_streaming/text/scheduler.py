"""Continuous batching: one engine thread runs every active sequence in each step.

Each step reaps cancelled and expired sequences, admits waiting ones into free KV slots,
prefills at most `prefill_chunk_tokens` prompt tokens (so a long prompt never stalls the
others; new prompts share one forward), and decodes every running sequence in one batched
forward. Requests that arrive during that decode are admitted and prefilled between two of
its layers, so their first token does not wait for the whole step. The event loop only
submits requests, flags cancellations and receives deltas through each request's sink.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from ..errors import ServerAtCapacity
from .batch_sampling import choose_batch
from .generation import Delta, Generation
from .metrics import GenerationMetrics
from .sampling import Choice
from .stopping import FinishReason

logger = logging.getLogger(__name__)


def at_capacity(waiting: int, max_waiting: int, max_running: int) -> ServerAtCapacity:
    """The refusal when the waiting room is full (retryable)."""
    return ServerAtCapacity(
        f"server at capacity: {waiting} requests waiting "
        f"(max_waiting={max_waiting}, max_running={max_running}); retry later."
    )


class Engine(Protocol):
    """What the scheduler needs from an engine (GPT2Engine, or a fake in tests)."""

    def allocate(self) -> int: ...
    def release(self, slot: int) -> None: ...
    def free_slots(self) -> int: ...
    def prefill_many(
        self, slots: Sequence[int], token_ids: Sequence[Sequence[int]]
    ) -> np.ndarray: ...
    def decode(
        self,
        slots: Sequence[int],
        token_ids: Sequence[int],
        between_layers: Callable[[], object] | None = None,
    ) -> np.ndarray: ...


@dataclass(eq=False)
class SequenceRequest:
    """A request as the scheduler tracks it; `sink` must be safe to call from any thread."""

    generation: Generation
    sink: Callable[[Delta], object]
    deadline: float
    arrival: float = field(default_factory=time.monotonic)
    cancelled: bool = False
    slot: int | None = None
    admitted_at: float | None = None
    """When it got a KV slot (its queue time ends)."""
    prefilled: int = 0
    last_token_at: float | None = None

    @property
    def prefill_done(self) -> bool:
        """Whether the whole prompt is in the KV cache."""
        return self.prefilled == len(self.generation.prompt_ids)


class Scheduler:
    """Admission, batching and cancellation for one engine; thread-safe `submit`/`cancel`."""

    def __init__(
        self,
        engine: Engine,
        *,
        max_running: int,
        max_waiting: int,
        prefill_chunk_tokens: int,
        auto_stream_step: int = 16,
        metrics: GenerationMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.engine = engine
        self.max_running = max_running
        self.max_waiting = max_waiting
        self.prefill_chunk_tokens = prefill_chunk_tokens
        self.auto_stream_step = auto_stream_step
        self.metrics = metrics
        self.clock = clock
        self.steps = 0
        self.on_prefilled: Callable[[], None] | None = None
        """Called after each prefill that sampled first tokens (the engine process flushes
        them there, before everyone's decode ends)."""
        self.poll: Callable[[], None] | None = None
        """Called between layers of each decode, before looking for new requests (the engine
        process reads its command pipe there)."""
        self._waiting: deque[SequenceRequest] = deque()
        self._running: list[SequenceRequest] = []
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> int:
        """Sequences holding a KV slot."""
        return len(self._running)

    @property
    def waiting(self) -> int:
        """Requests waiting for a slot."""
        return len(self._waiting)

    def submit(self, request: SequenceRequest) -> None:
        """Queue a request; refuse it at once when the waiting room is full."""
        with self._cond:
            free = self.max_running - len(self._running)
            if len(self._waiting) >= self.max_waiting + max(free, 0):
                raise at_capacity(len(self._waiting), self.max_waiting, self.max_running)
            self._waiting.append(request)
            self._cond.notify()

    def cancel(self, request: SequenceRequest) -> None:
        """Flag a request as abandoned; the engine thread drops it at its next step."""
        request.cancelled = True
        with self._cond:
            self._cond.notify()

    def start(self) -> None:
        """Run the engine loop on its own daemon thread."""
        self._thread = threading.Thread(target=self._loop, name="text-engine", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the loop; every unfinished request ends as cancelled."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not (self._stopping or self._waiting or self._running):
                    self._cond.wait()
                if self._stopping:
                    break
            self.safe_step()
        self.abort_all()

    def safe_step(self) -> None:
        """`step`, but a failed step ends the running sequences with an error: the loop goes on."""
        try:
            self.step()
        except Exception as err:  # noqa: BLE001 - the loop must survive a failed step
            logger.exception("engine step failed")
            self._fail_running(FinishReason.ERROR, f"engine step failed: {err}")

    def abort_all(self) -> None:
        """End every running and waiting request as cancelled (at shutdown)."""
        self._fail_running(FinishReason.CANCELLED, "server is shutting down")
        with self._cond:
            waiting, self._waiting = list(self._waiting), deque()
        for request in waiting:
            self._emit(request, request.generation.finish(FinishReason.CANCELLED))

    def step(self) -> None:
        """One engine step: reap, admit, prefill up to a chunk of prompt tokens (new prompts
        together, in one forward), then decode every sequence whose prompt is in, the ones
        just prefilled included."""
        self._reap(self.clock())
        self._admit()
        self._prefill(self._running)
        self._decode()
        self.steps += 1
        if self.metrics is not None:
            self.metrics.steps.inc()
            self.metrics.running.set(len(self._running))
            self.metrics.waiting.set(len(self._waiting))

    def _reap(self, now: float) -> None:
        with self._cond:
            gone = [r for r in self._waiting if r.cancelled or now > r.deadline]
            for request in gone:
                self._waiting.remove(request)
        for request in gone + [r for r in self._running if r.cancelled or now > r.deadline]:
            if request.cancelled:
                self._finish(request, request.generation.finish(FinishReason.CANCELLED))
            else:
                waited = now - request.arrival
                message = f"request deadline exceeded after {waited:.1f} s"
                self._finish(request, request.generation.finish(FinishReason.TIMEOUT, message))

    def _admit(self) -> list[SequenceRequest]:
        admitted: list[SequenceRequest] = []
        while len(self._running) < self.max_running and self.engine.free_slots() > 0:
            with self._cond:
                if not self._waiting:
                    break
                request = self._waiting.popleft()
            request.slot = self.engine.allocate()
            request.admitted_at = self.clock()
            self._running.append(request)
            admitted.append(request)
            if self.metrics is not None:
                self.metrics.queue_time.observe(request.admitted_at - request.arrival)
        return admitted

    def _prefill(self, candidates: list[SequenceRequest]) -> None:
        """Prefill the next chunks of the candidates' prompts, at most `prefill_chunk_tokens`
        in all, in one forward; sample the first token of each prompt that is now complete
        and hand those out at once (`on_prefilled`)."""
        budget, batch, chunks = self.prefill_chunk_tokens, [], []
        for request in candidates:
            if budget <= 0:
                break
            if request.prefill_done:
                continue
            prompt = request.generation.prompt_ids
            chunk = prompt[request.prefilled : request.prefilled + budget]
            batch.append(request)
            chunks.append(chunk)
            budget -= len(chunk)
        if not batch:
            return
        logits = self.engine.prefill_many([r.slot for r in batch], chunks)  # type: ignore[misc]
        for request, chunk in zip(batch, chunks, strict=True):
            request.prefilled += len(chunk)
        if self.metrics is not None:
            self.metrics.prompt_tokens.inc(sum(len(c) for c in chunks))
        done = [i for i, r in enumerate(batch) if r.prefill_done]
        if done:
            self._advance_all([batch[i] for i in done], logits[done])
            if self.on_prefilled is not None:
                self.on_prefilled()  # first tokens leave before everyone's decode ends

    def _between_layers(self) -> None:
        """Mid-decode: start the requests that arrived since the step began, so a new prompt
        waits for one layer of the others' decode, not for all of it. The engine leaves the
        decode's slots alone meanwhile; the new ones decode from the next step."""
        if self.poll is not None:
            self.poll()
        if self._waiting:
            self._prefill(self._admit())

    def _decode(self) -> None:
        batch = [r for r in self._running if r.prefill_done]
        if not batch:
            return
        batch.sort(key=lambda r: r.slot)  # type: ignore[arg-type, return-value]
        slots = [r.slot for r in batch]
        tokens = [r.generation.last_token for r in batch]
        logits = self.engine.decode(slots, tokens, self._between_layers)  # type: ignore[arg-type]
        self._advance_all(batch, logits)

    def _advance_all(self, batch: list[SequenceRequest], logits: np.ndarray) -> None:
        """Sample the whole batch's next tokens together (rows of logits), then hand them out."""
        generations = [r.generation for r in batch]
        choices = choose_batch(
            logits, [g.chooser for g in generations], [g.history for g in generations]
        )
        auto_interval = -(-len(self._running) // self.auto_stream_step)  # ceil
        for request, choice in zip(batch, choices, strict=True):
            self._advance(request, choice, auto_interval)

    def _advance(self, request: SequenceRequest, choice: Choice, auto_interval: int) -> None:
        delta = request.generation.accept(choice, auto_interval)
        now = self.clock()
        if self.metrics is not None:
            self.metrics.generation_tokens.inc()
            if request.last_token_at is None:
                self.metrics.ttft.observe(now - request.arrival)
            else:
                self.metrics.inter_token.observe(now - request.last_token_at)
        request.last_token_at = now
        if delta is None:
            return
        if delta.finish_reason is not None:
            self._finish(request, delta)
        else:
            self._emit(request, delta)

    def _finish(self, request: SequenceRequest, delta: Delta) -> None:
        if request in self._running:
            self._running.remove(request)
        if request.slot is not None:
            self.engine.release(request.slot)
            request.slot = None
        if self.metrics is not None and delta.finish_reason is not None:
            self.metrics.e2e.observe(self.clock() - request.arrival)
            self.metrics.finished(delta.finish_reason.value)
        self._emit(request, delta)

    def _fail_running(self, reason: FinishReason, message: str) -> None:
        for request in list(self._running):
            self._finish(request, request.generation.finish(reason, message))

    @staticmethod
    def _emit(request: SequenceRequest, delta: Delta) -> None:
        try:
            request.sink(delta)
        except RuntimeError:  # the client's event loop is gone; nothing left to tell
            logger.debug("dropped a delta for a closed event loop")


class InThreadEngine:
    """The scheduler on a thread of MLServer's process, fed from its event loop.

    The in-thread mode of the runtime (`engine_process: false`); `EngineProcess` is the other.
    """

    def __init__(self, scheduler: Scheduler, gil_switch_interval_ms: float | None) -> None:
        if gil_switch_interval_ms is not None:  # the engine thread shares the loop's GIL
            sys.setswitchinterval(gil_switch_interval_ms / 1000)
        self.scheduler = scheduler
        scheduler.start()

    def submit(
        self, generation: Generation, deadline: float, queue: asyncio.Queue[Delta]
    ) -> SequenceRequest:
        """Queue a generation; its deltas go to `queue` (refuses with ServerAtCapacity)."""
        loop = asyncio.get_running_loop()
        request = SequenceRequest(
            generation,
            sink=lambda delta: loop.call_soon_threadsafe(queue.put_nowait, delta),
            deadline=deadline,
        )
        self.scheduler.submit(request)
        return request

    def cancel(self, handle: SequenceRequest) -> None:
        """Drop the request at the next engine step."""
        self.scheduler.cancel(handle)

    async def stop(self) -> None:
        """Stop the engine thread; unfinished requests end as cancelled."""
        await asyncio.to_thread(self.scheduler.stop)
