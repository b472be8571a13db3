"""Preallocated key/value cache with one slot per running sequence."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .seams import NoFreeSlotError, SequenceTooLongError, SlotError


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
