"""Which tokens each KV slot holds, kept after release, so a prompt that begins like an earlier
one reuses its cached keys and values instead of prefilling them again.

llama-server's ``cache_prompt``, slot by slot: a new request takes the free slot whose cached
tokens share the longest prefix with its prompt, else the least recently released one (the
cells least likely to be asked for again); among equals, the least recently released too.
A slot in use that shares a longer prefix (the same system prompt, running) is a ``donor``:
its cells are copied (llama-server's host-memory prompt cache restores saved prompts so).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

SIMILARITY = 0.1
"""Reuse a slot by its prefix only when that covers more than this share of the prompt;
below it take the least recently released slot (llama-server's --slot-prompt-similarity)."""

COPY_RATIO = 32
"""Copy a donor's prefix only if the donor holds at most this many cells per shared token
(its every cell is copied): a cell costs ~1/300 of a token's prefill at 88M, ~1/60 at 4M."""


class SlotPrefixes:
    """The token ids in each of ``max_slots`` slots of ``context_length`` positions."""

    def __init__(self, max_slots: int, context_length: int, compact: bool = False) -> None:
        self.tokens = np.zeros((max_slots, context_length), dtype=np.int32)
        self.compact = compact
        """Without a shared prefix take the least recently released slot of those that keep
        the slots in use one run of consecutive ids (a gap in it, else a neighbour of its
        ends): llama.cpp's split KV batches only consecutive sequence ids together, so a
        gap between running slots costs a pass over the weights. Nothing in use: any slot."""
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
        top = int(common.max())
        # A shared BOS (or less than SIMILARITY of the prompt) is no reason to evict a slot:
        # then any free slot will do; else one of those sharing the longest prefix.
        if top <= max(SIMILARITY * ids.size, 1):
            shortlist = np.arange(free.size)  # positions in `free`
        else:
            shortlist = np.flatnonzero(common == top)
        if self.compact and shortlist.size > 1 and free.size < self._released.size:
            run = shortlist[self._keeps_a_run(free)[free[shortlist]]]
            shortlist = run if run.size else shortlist  # a prefix wins over the run
        best = shortlist[np.argmin(self._released[free[shortlist]])]  # least recently released
        return int(free[best]), int(common[best])

    def donor(
        self, held: np.ndarray, lengths: np.ndarray, token_ids: Sequence[int], kept: int
    ) -> tuple[int, int] | None:
        """The slot of ``held`` (in use) sharing the longest prefix with ``token_ids``, and
        its length, if longer than ``kept`` (what the chosen free slot holds) and than the
        SIMILARITY rule, and worth copying (COPY_RATIO); None otherwise."""
        if held.size == 0:
            return None
        ids = np.asarray(token_ids, dtype=np.int32)
        common = self._common(held, lengths[held], ids)
        best = int(np.argmax(common))
        shared = int(common[best])
        worth = shared > max(kept, SIMILARITY * ids.size, 1)
        if not worth or lengths[held[best]] > COPY_RATIO * shared:
            return None
        return int(held[best]), shared

    def _keeps_a_run(self, free: np.ndarray) -> np.ndarray:
        """Which slots (a mask over all), taken now, leave the slots in use consecutive:
        the free ones inside their span, else the two beside it (some slot is in use)."""
        used = np.ones(self._released.size, dtype=bool)
        used[free] = False
        held = np.flatnonzero(used)
        low, high = held[0], held[-1]
        keeps = ~used
        keeps[:low] = keeps[high + 1 :] = False  # the gaps inside the span
        if not keeps.any():  # no gap: a neighbour of either end (free: outside the span)
            for side in (low - 1, high + 1):
                if 0 <= side < used.size:
                    keeps[side] = True
        return keeps

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
