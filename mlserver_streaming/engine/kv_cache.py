"""Preallocated key/value cache with one slot per running sequence."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class NoFreeSlotError(RuntimeError):
    """Every slot is taken; the caller must wait for a sequence to finish."""


class SlotError(ValueError):
    """A slot id is out of range, not allocated, or repeated within one batch."""


class SequenceTooLongError(ValueError):
    """Appending the tokens would run past the cache's max_len."""


class KVCache:
    """Keys and values for up to ``n_slots`` sequences, allocated once so decoding never
    allocates cache memory; each slot remembers how many positions it holds."""

    def __init__(self, n_layer: int, n_slots: int, n_head: int, max_len: int, head_dim: int):
        shape = (n_layer, n_slots, n_head, max_len, head_dim)
        # np.zeros is lazily committed by the OS, so unused slots cost no resident memory,
        # and unwritten positions stay finite (they are masked, but NaN * 0 would leak).
        self.k = np.zeros(shape, dtype=np.float32)  # [n_layer, n_slots, n_head, max_len, head_dim]
        self.v = np.zeros(shape, dtype=np.float32)
        self.lengths = np.zeros(n_slots, dtype=np.intp)  # positions filled, per slot
        self._in_use = np.zeros(n_slots, dtype=bool)

    @property
    def n_slots(self) -> int:
        """How many sequences fit at once."""
        return self.k.shape[1]

    @property
    def max_len(self) -> int:
        """How many positions one slot holds."""
        return self.k.shape[3]

    def allocate(self) -> int:
        """Claim the lowest free slot (keeping busy slots packed lets batches read a view)."""
        free = np.flatnonzero(~self._in_use)
        if free.size == 0:
            raise NoFreeSlotError(
                f"all {self.n_slots} KV cache slots are in use; release one before allocating."
            )
        slot = int(free[0])
        self._in_use[slot] = True
        self.lengths[slot] = 0
        return slot

    def release(self, slot: int) -> None:
        """Free ``slot`` for the next sequence; its stale keys are simply overwritten later."""
        self._check_allocated([slot])
        self._in_use[slot] = False
        self.lengths[slot] = 0

    def length(self, slot: int) -> int:
        """Positions currently cached for ``slot``."""
        self._check_allocated([slot])
        return int(self.lengths[slot])

    def free_slots(self) -> int:
        """How many more sequences can be allocated right now."""
        return self.n_slots - int(self._in_use.sum())

    def check_append(self, slots: Sequence[int], n_new: int | Sequence[int]) -> None:
        """Fail before any work if ``slots`` are not distinct allocated slots with room for
        ``n_new`` more positions each (one count for all, or one per slot)."""
        self._check_allocated(slots)
        if len(set(slots)) != len(slots):
            raise SlotError(f"slots in one batch must be distinct, got {list(slots)}.")
        counts = [n_new] * len(slots) if isinstance(n_new, int) else list(n_new)
        for slot, count in zip(slots, counts, strict=True):
            if self.lengths[slot] + count > self.max_len:
                raise SequenceTooLongError(
                    f"slot {slot} holds {self.lengths[slot]} tokens; adding {count} would make "
                    f"{self.lengths[slot] + count}, above max_seq_len={self.max_len}."
                )

    def advance(self, slots: np.ndarray, n_new: int | np.ndarray) -> None:
        """Record that ``n_new`` positions (one count for all, or one per slot) were written."""
        self.lengths[slots] += n_new

    @staticmethod
    def rows(slots: np.ndarray) -> tuple[slice | np.ndarray, np.ndarray | None]:
        """How a batch of ascending ``slots`` reads the slot axis, and where its rows sit.

        Consecutive slots are a slice (numpy returns a view, no copy). Slots with a few idle
        ones in between are the slice over their whole range plus the batch's offsets in it:
        attending for a few idle rows costs less than copying everyone's keys. Sparser
        batches are an index array (a gather), offsets None.
        """
        low, high = int(slots[0]), int(slots[-1]) + 1
        if high - low == len(slots):
            return slice(low, high), None
        if high - low <= 2 * len(slots):
            return slice(low, high), slots - low
        return slots, None

    def _check_allocated(self, slots: Sequence[int]) -> None:
        for slot in slots:
            if not 0 <= slot < self.n_slots:
                raise SlotError(f"slot must be in [0, {self.n_slots}), got {slot}.")
            if not self._in_use[slot]:
                raise SlotError(f"slot {slot} is not allocated; call allocate() first.")


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
