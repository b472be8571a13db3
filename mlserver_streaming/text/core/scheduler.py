"""Continuous batching: each step schedules every active sequence and returns what it produced.

A step reaps cancelled and expired sequences, admits waiting ones into free KV slots,
prefills at most `prefill_chunk_tokens` prompt tokens (so a long prompt never stalls the
others; new prompts share one forward), and decodes every running sequence in one batched
forward. Requests that arrive during that decode are admitted and prefilled between two of
its layers, so their first token does not wait for the whole step. The scheduler owns no
thread and calls nothing back but the `between` argument of `step`: it returns a
`StepOutput`, and its driver moves it (vLLM V1's `EngineCore.step`).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ...engine.seams import AllocateCached, Engine
from ...errors import client_message
from ...events import FinishReason
from ..sample.batch import choose_batch
from ..sample.generation import Delta, Generation
from .step_output import StepOutput

Between = Callable[[StepOutput], None]
"""The driver's turn inside a step: it gets the output ready so far (first tokens) and may
submit or cancel requests before the step goes on."""


@dataclass(eq=False)
class SequenceRequest:
    """A request as the scheduler tracks it, with its sampling state."""

    request_id: int
    generation: Generation
    deadline: float
    arrival: float = field(default_factory=time.monotonic)
    cancelled: bool = False
    slot: int | None = None
    prefilled: int = 0

    @property
    def prefill_done(self) -> bool:
        """Whether the whole prompt (with any replayed tokens) is in the KV cache."""
        return self.prefilled == len(self.generation.prefill_ids)

    @property
    def one_left(self) -> bool:
        """Whether all of the prompt but its last token is cached: that token can join the
        others' decode instead of a prefill pass of its own."""
        return self.prefilled == len(self.generation.prefill_ids) - 1

    def abandoned(self, now: float) -> Delta | None:
        """The last delta if the request was cancelled or is past its deadline, else None."""
        if self.cancelled:
            return self.generation.finish(FinishReason.CANCELLED)
        if now > self.deadline:
            late = f"request deadline exceeded after {now - self.arrival:.1f} s"
            return self.generation.finish(FinishReason.TIMEOUT, late)
        return None


class Scheduler:
    """Admission, chunked prefill, batched decode and cancellation for one engine.

    Single-threaded: its driver calls `submit`, `cancel` and `step` from one thread (the
    `between` turn included). Capacity is the runtime's to check before submitting."""

    def __init__(
        self,
        engine: Engine,
        *,
        max_running: int,
        prefill_chunk_tokens: int,
        auto_stream_step: int = 16,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.engine, self.max_running, self.clock = engine, max_running, clock
        self.prefill_chunk_tokens, self.auto_stream_step = prefill_chunk_tokens, auto_stream_step
        self._waiting: deque[SequenceRequest] = deque()
        self._running: list[SequenceRequest] = []
        self._by_id: dict[int, SequenceRequest] = {}

    @property
    def running(self) -> int:
        """Sequences holding a KV slot."""
        return len(self._running)

    @property
    def waiting(self) -> int:
        """Requests waiting for a slot."""
        return len(self._waiting)

    def submit(self, request: SequenceRequest) -> None:
        """Queue a request; it is admitted at the next step with a free slot."""
        self._waiting.append(request)
        self._by_id[request.request_id] = request

    def cancel(self, request_id: int) -> None:
        """Flag a request as abandoned; the next step ends it (unknown ids are ignored)."""
        request = self._by_id.get(request_id)
        if request is not None:
            request.cancelled = True

    def step(self, between: Between | None = None, out: StepOutput | None = None) -> StepOutput:
        """One engine step: reap, admit, prefill up to a chunk of prompt tokens (new prompts
        together, in one forward), then decode every sequence whose prompt is in (or all but
        its last token, which the decode takes). `between` gets the first tokens before the
        decode and a turn between its layers; `out` keeps what the step made if it raises."""
        out = StepOutput() if out is None else out
        self._reap(self.clock(), out)
        self._admit(out)
        self._prefill([r for r in self._running if not r.one_left], out)
        self._decode(out, between)
        out.step_done = True
        return self._counted(out)

    def end(
        self,
        reason: FinishReason,
        message: str,
        *,
        waiting: bool = True,
        out: StepOutput | None = None,
    ) -> StepOutput:
        """End every running request, and the waiting ones too unless `waiting` is False
        (a failed step ends only what ran in it): their last deltas, added to `out`."""
        ended = [*self._running, *(self._waiting if waiting else ())]
        if waiting:
            self._waiting.clear()
        out = StepOutput() if out is None else out
        for request in ended:
            self._finish(request, request.generation.finish(reason, message), out)
        return self._counted(out)

    def _counted(self, out: StepOutput) -> StepOutput:
        out.running, out.waiting = len(self._running), len(self._waiting)
        return out

    def _reap(self, now: float, out: StepOutput) -> None:
        for request in [*self._waiting, *self._running]:
            last = request.abandoned(now)
            if last is not None:
                self._finish(request, last, out)

    def _admit(self, out: StepOutput) -> list[SequenceRequest]:
        admitted: list[SequenceRequest] = []
        while self._waiting and len(self._running) < self.max_running and self.engine.free_slots():
            request = self._waiting.popleft()
            try:
                request.slot, request.prefilled = claim_slot(self.engine, request)
            except Exception as err:  # noqa: BLE001 - the request ends; the others go on
                self._finish(request, no_slot(request, err), out)
                break
            self._running.append(request)
            admitted.append(request)
            out.admitted[request.request_id] = self.clock() - request.arrival
        return admitted

    def _prefill(self, candidates: list[SequenceRequest], out: StepOutput) -> None:
        """Prefill the next chunks of the candidates' prompts; sample the first token of
        each prompt now complete."""
        done, logits = prefill(self.engine, candidates, self.prefill_chunk_tokens, out)
        if done:
            self._advance_all(done, logits, out)

    def _decode(self, out: StepOutput, between: Between | None) -> None:
        batch, slots, tokens = decode_rows(self._running)
        if not batch:
            return
        if between is not None and out.deltas:
            between(self._counted(out.take()))  # first tokens leave before the decode

        def between_layers() -> None:
            """Mid-decode: start the requests that arrived since the step began, so a new
            prompt waits for one layer of the others' decode, not for all of it. The engine
            leaves the decode's slots alone; the new ones decode from the next step."""
            if between is not None:
                between(self._counted(out.take()))
            if self._waiting:
                self._prefill(self._admit(out), out)
                if between is not None and out.deltas:
                    between(self._counted(out.take()))

        logits = self.engine.decode(slots, tokens, between_layers)
        for request in batch:
            if not request.prefill_done:  # its prompt's last token: now the first sampled
                request.prefilled += 1
                out.prompt_tokens += 1
        self._advance_all(batch, logits, out)

    def _advance_all(
        self, batch: list[SequenceRequest], logits: np.ndarray, out: StepOutput
    ) -> None:
        auto_interval = -(-len(self._running) // self.auto_stream_step)  # ceil
        for request, delta in sample_batch(batch, logits, auto_interval):
            if delta.finish_reason is not None:
                self._finish(request, delta, out)
            else:
                out.add(request.request_id, delta)

    def _finish(self, request: SequenceRequest, delta: Delta, out: StepOutput) -> None:
        if request in self._running:
            self._running.remove(request)
        elif request in self._waiting:
            self._waiting.remove(request)
        if request.slot is not None:
            self.engine.release(request.slot)
            request.slot = None
        self._by_id.pop(request.request_id, None)
        out.add(request.request_id, delta)


def claim_slot(engine: Engine, request: SequenceRequest) -> tuple[int, int]:
    """A slot for the request, and how many of its prompt's leading tokens it holds already
    (an engine with `allocate_cached` keeps released slots' KV)."""
    cached: AllocateCached | None = getattr(engine, "allocate_cached", None)
    if cached is None:
        return engine.allocate(), 0
    return cached(request.generation.prefill_ids)


def no_slot(request: SequenceRequest, err: Exception) -> Delta:
    """The last delta of a request that could not be given a slot."""
    return request.generation.finish(FinishReason.ERROR, client_message(err, "no slot"))


def decode_rows(
    running: list[SequenceRequest],
) -> tuple[list[SequenceRequest], list[int], list[int]]:
    """The sequences a decode step takes (prompt in, or all of it but its last token, which
    it then feeds), in slot order, with their slots and input tokens."""
    batch = [r for r in running if r.prefill_done or r.one_left]
    batch.sort(key=lambda r: r.slot)  # type: ignore[arg-type, return-value]
    slots: list[int] = [r.slot for r in batch]  # type: ignore[misc]
    tokens = [
        r.generation.last_token if r.prefill_done else r.generation.prefill_ids[-1] for r in batch
    ]
    return batch, slots, tokens  # type: ignore[return-value]


def prefill(
    engine: Engine, candidates: list[SequenceRequest], budget: int, out: StepOutput
) -> tuple[list[SequenceRequest], np.ndarray]:
    """Prefill the next chunks of the candidates' prompts, at most `budget` tokens, in one
    forward; the requests whose prompt is now complete, and their last token's logits."""
    batch, chunks = next_chunks(candidates, budget)
    if not batch:
        return [], np.empty(0)
    logits = engine.prefill_many([r.slot for r in batch], chunks)  # type: ignore[misc]
    for request, chunk in zip(batch, chunks, strict=True):
        request.prefilled += len(chunk)
    out.prompt_tokens += sum(len(c) for c in chunks)
    done = [i for i, r in enumerate(batch) if r.prefill_done]
    return [batch[i] for i in done], logits[done]


def next_chunks(
    candidates: list[SequenceRequest], budget: int
) -> tuple[list[SequenceRequest], list[list[int]]]:
    """The requests to prefill next and their prompt chunks, at most `budget` tokens in all,
    in order: a long prompt goes in over several steps and never stalls the others."""
    batch, chunks = [], []
    for request in candidates:
        if budget <= 0:
            break
        if request.prefill_done:
            continue
        prompt = request.generation.prefill_ids
        chunk = prompt[request.prefilled : request.prefilled + budget]
        batch.append(request)
        chunks.append(chunk)
        budget -= len(chunk)
    return batch, chunks


def sample_batch(
    batch: list[SequenceRequest], logits: np.ndarray, auto_interval: int
) -> list[tuple[SequenceRequest, Delta]]:
    """Sample every row's next token together, then let each generation take its token:
    the deltas that are ready (text to send, or the end)."""
    generations = [r.generation for r in batch]
    choices = choose_batch(
        logits, [g.chooser for g in generations], [g.history for g in generations]
    )
    ready = []
    for request, choice in zip(batch, choices, strict=True):
        delta = request.generation.accept(choice, auto_interval)
        if delta is not None:
            ready.append((request, delta))
    return ready
