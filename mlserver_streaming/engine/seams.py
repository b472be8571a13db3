"""What the text core needs of an engine, and the checks every engine runs at its entry
points (the numpy GPT-2 engine and llama.cpp alike): one shape rule and one error type each."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np


class Engine(Protocol):
    """What the scheduler needs from an engine (GPT2Engine, LlamaCppEngine, a test fake)."""

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


AllocateCached = Callable[[Sequence[int]], tuple[int, int]]
"""An engine's optional `allocate_cached(token_ids)` (LlamaCppEngine: free slots keep their
KV): claim a slot for a sequence beginning with `token_ids`; returns the slot and how many of
those tokens (never all) it holds already, which admission then skips."""


class NoFreeSlotError(RuntimeError):
    """Every slot is taken; the caller must wait for a sequence to finish."""


class SlotError(ValueError):
    """A slot id is out of range, not allocated, or repeated within one batch."""


class SequenceTooLongError(ValueError):
    """Appending the tokens would run past the cache's max_len."""


def check_prefill(slots: Sequence[int], token_ids: Sequence[Sequence[int]]) -> None:
    """The shape every engine's `prefill_many` takes: one non-empty chunk per slot."""
    if len(slots) != len(token_ids) or not slots or not all(len(t) for t in token_ids):
        raise ValueError(
            "prefill needs a list of token ids per slot, with at least one token id in each; "
            f"got {len(slots)} slots and lists of lengths {[len(t) for t in token_ids]}."
        )


def check_decode(slots: Sequence[int], token_ids: Sequence[int]) -> None:
    """The shape every engine's `decode` takes: one token id per slot, at least one slot."""
    if len(slots) != len(token_ids) or not slots:
        raise ValueError(
            "decode needs one token id per slot and at least one slot, got "
            f"{len(slots)} slots and {len(token_ids)} token ids."
        )


def check_slots(
    slots: Sequence[int],
    counts: Sequence[int] | np.ndarray,
    in_use: np.ndarray,
    lengths: np.ndarray,
    context_length: int,
) -> None:
    """Every slot in range, allocated, distinct and with room for its `counts` new tokens
    (vectorized: a step of 32 slots checked one by one in Python cost ~50 us)."""
    where = np.asarray(slots, dtype=np.intp)
    outside = (where < 0) | (where >= in_use.size)
    if outside.any():
        raise SlotError(f"slot must be in [0, {in_use.size}), got {where[outside][0]}.")
    free = ~in_use[where]
    if free.any():
        raise SlotError(f"slot {where[free][0]} is not allocated; call allocate() first.")
    after = lengths[where] + np.asarray(counts)
    over = np.flatnonzero(after > context_length)
    if over.size:
        i = over[0]
        raise SequenceTooLongError(
            f"slot {where[i]} holds {lengths[where[i]]} tokens; adding "
            f"{after[i] - lengths[where[i]]} would make {after[i]}, above "
            f"context_length={context_length}."
        )
    if where.size > 1 and np.unique(where).size != where.size:
        raise SlotError(f"slots in one batch must be distinct, got {list(slots)}.")


def check_token_ids(low: int, high: int, vocab_size: int) -> None:
    """The lowest and highest id of a batch are in the vocabulary."""
    if low < 0 or high >= vocab_size:
        raise ValueError(f"token ids must be in [0, {vocab_size}), got min {low} and max {high}.")
