"""Which tokens each KV slot holds, kept after release, so a prompt that begins like an earlier
one reuses its cached keys and values instead of prefilling them again.

llama-server's ``cache_prompt``, slot by slot: a new request takes the free slot whose cached
tokens share the longest prefix with its prompt, else the least recently released one (the
cells least likely to be asked for again).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

SIMILARITY = 0.1
"""Reuse a slot by its prefix only when that covers more than this share of the prompt;
below it take the least recently released slot (llama-server's --slot-prompt-similarity)."""


class SlotPrefixes:
    """The token ids in each of ``max_slots`` slots of ``context_length`` positions."""

    def __init__(self, max_slots: int, context_length: int, compact: bool = False) -> None:
        self.tokens = np.zeros((max_slots, context_length), dtype=np.int32)
        self.compact = compact
        """Without a shared prefix take the lowest free slot, not the least recently
        released: llama.cpp's split KV batches only consecutive sequence ids together, so a
        gap between running slots costs a pass over the weights."""
        self._released = np.zeros(max_slots, dtype=np.int64)  # when, in releases (LRU order)
        self._releases = 0

    def write(self, slots: np.ndarray, positions: np.ndarray, token_ids: np.ndarray) -> None:
        """Record that ``token_ids[i]`` went into ``slots[i]`` at ``positions[i]``."""
        self.tokens[slots, positions] = token_ids

    def released(self, slot: int) -> None:
        """Note that ``slot`` was freed now (its tokens stay reusable)."""
        self._releases += 1
        self._released[slot] = self._releases

    def choose(
        self, free: np.ndarray, lengths: np.ndarray, token_ids: Sequence[int]
    ) -> tuple[int, int]:
        """The free slot to give ``token_ids`` and how many of its leading tokens that slot
        holds already, at most all but the last (whose logits the caller needs)."""
        ids = np.asarray(token_ids, dtype=np.int32)
        common = self._common(free, lengths[free], ids)
        best = int(np.argmax(common))  # ties: the lowest slot
        if common[best] <= SIMILARITY * ids.size:  # a shared BOS is no reason to evict
            best = 0 if self.compact else int(np.argmin(self._released[free]))
        return int(free[best]), int(common[best])

    def _common(self, slots: np.ndarray, lengths: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """How many leading tokens each slot shares with ``ids``, at most its length and
        all of ``ids`` but the last: one comparison over every slot (one by one, a step with
        32 free slots spent ~200 us here)."""
        n = min(max(ids.size - 1, 0), self.tokens.shape[1])
        limit = np.minimum(lengths, n)
        if n == 0:
            return limit
        differ = self.tokens[slots, :n] != ids[:n]
        differ |= np.arange(n) >= limit[:, None]  # past a slot's length nothing is shared
        return np.where(differ.any(axis=1), np.argmax(differ, axis=1), limit)
