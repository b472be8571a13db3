"""Our KV slots on llama.cpp's sequences: which sequence holds each slot, how many cells each
sequence has, and moving a slot to another sequence.

A slot is the scheduler's id for a request's life; the sequence is where llama.cpp keeps its
cells. They start equal. With split KV a step batches only a run of consecutive sequence
ids in one pass (seq_runs.py), and when requests end with none arriving (a burst's tail) the
running sequences drift apart: then ``compact`` moves one slot's cells into a gap that has
stayed free (``llama_state_seq_get_data`` / ``set_data``: ~1 ms for 150 cells of an 88M
model, against a pass or a few pad rows saved on every step after). The slot keeps its id;
the sequence it left keeps its cells as a prefix cache, like any released one. The same copy
gives a new request the prefix it shares with a sequence in use (``claim_cached``).
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from typing import Any

import numpy as np

from .prefix_cache import SlotPrefixes
from .seams import NoFreeSlotError, check_slots
from .seq_runs import next_move

FULL_STATE = 0  # llama_state_seq_flags: every layer's cells, not only the SWA ones


class LlamaSeqs:
    """``max_slots`` slots over as many llama.cpp sequences; arrays by sequence id."""

    def __init__(
        self,
        lib: Any,
        ctx: Any,
        max_slots: int,
        context_length: int,
        prefixes: SlotPrefixes | None,
        copies: bool = True,
    ) -> None:
        """``copies`` False: never copy cells between sequences (a recurrent state cannot be
        cut to a prefix)."""
        self._lib, self._ctx, self.context_length = lib, ctx, context_length
        self.copies = copies
        self.memory = lib.llama_get_memory(ctx)
        self.seq_of = np.arange(max_slots, dtype=np.int32)  # slot -> sequence
        self.slot_of = np.arange(max_slots, dtype=np.int32)  # sequence -> slot
        self.lengths = np.zeros(max_slots, dtype=np.intp)  # cells cached, by sequence
        self.in_use = np.zeros(max_slots, dtype=bool)
        self.prefixes = prefixes
        self.steps = 0  # decode steps so far (the clock of idle sequences)
        self.moves = self.copied = 0  # slots moved; prefixes copied from a slot in use
        self._freed_at = np.zeros(max_slots, dtype=np.int64)

    def check(self, slots: Sequence[int], counts: Sequence[int] | np.ndarray) -> None:
        """check_slots in the caller's terms (slot ids in the messages)."""
        seq = self.seq_of
        check_slots(slots, counts, self.in_use[seq], self.lengths[seq], self.context_length)

    def free(self) -> np.ndarray:
        """The free sequences, lowest first; NoFreeSlotError when there is none."""
        if (free := np.flatnonzero(~self.in_use)).size == 0:
            raise NoFreeSlotError(
                f"all {self.in_use.size} sequences are in use; release one first."
            )
        return free

    def claim(self, seq: int, kept: int) -> int:
        """Mark ``seq`` in use, its cells cut to the first ``kept`` positions, or emptied where
        a cut would not leave those (a recurrent state cannot be cut; sliding-window layers
        may have dropped the prefix's first cells); returns its slot."""
        lib, memory = self._lib, self.memory
        if self.lengths[seq] > kept:
            cut = kept > 0 and lib.llama_memory_seq_rm(memory, seq, kept, -1)
            if not (cut and lib.llama_memory_seq_pos_min(memory, seq) == 0):
                lib.llama_memory_seq_rm(memory, seq, -1, -1)
                kept = 0
        self.in_use[seq], self.lengths[seq] = True, kept
        return int(self.slot_of[seq])

    def release(self, slot: int) -> None:
        """Free a slot's sequence; its cells stay for a later prompt with the same prefix (or,
        without the prefix cache, are removed at once)."""
        seq = int(self.seq_of[slot])
        self.in_use[seq] = False
        self._freed_at[seq] = self.steps
        if self.prefixes is not None:
            self.prefixes.released(seq)
        else:
            self._lib.llama_memory_seq_rm(self.memory, seq, -1, -1)
            self.lengths[seq] = 0

    def compact(self, seq: np.ndarray) -> bool:
        """Make the move seq_runs.next_move finds for a step over sequences ``seq``, if any;
        True if a slot moved (map the step's slots again)."""
        found = next_move(seq, self.in_use, self.steps - self._freed_at)
        return found is not None and self.move(*found)

    def claim_cached(self, token_ids: Sequence[int]) -> tuple[int, int]:
        """Claim the free sequence the prefix cache chooses for ``token_ids`` (the lowest,
        without one), with the longer prefix a sequence in use shares copied in; returns
        the slot and how many leading tokens it holds (never all: the last needs logits)."""
        free, prefixes = self.free(), self.prefixes
        if prefixes is None:
            return self.claim(int(free[0]), 0), 0
        seq, kept = prefixes.choose(free, self.lengths, token_ids)
        donor = prefixes.donor(np.flatnonzero(self.in_use), self.lengths, token_ids, kept)
        slot = self.claim(seq, kept)
        if donor is not None and self.copies:
            try:
                self.copy_prefix(*donor, seq)  # at most all of the prompt but its last token
            except BaseException:
                self.release(slot)  # the caller never got it: give it back
                raise
        return slot, int(self.lengths[seq])

    def copy_prefix(self, source: int, keep: int, destination: int) -> None:
        """Give ``destination`` the first ``keep`` cells of ``source``; where llama.cpp
        cannot (or a sliding window dropped the first ones), it is left empty."""
        lib, memory = self._lib, self.memory
        if not self._transfer(source, destination):
            return
        cut = lib.llama_memory_seq_rm(memory, destination, keep, -1)
        if not (cut and lib.llama_memory_seq_pos_min(memory, destination) == 0):
            lib.llama_memory_seq_rm(memory, destination, -1, -1)
            self.lengths[destination] = 0
            return
        self.lengths[destination] = keep
        self.copied += 1

    def move(self, source: int, destination: int) -> bool:
        """Copy the in-use ``source``'s cells into the free ``destination`` and give its slot
        that sequence; False (nothing moved, destination emptied) if llama.cpp refused."""
        if not self._transfer(source, destination):
            return False
        slot, other = int(self.slot_of[source]), int(self.slot_of[destination])
        self.seq_of[slot], self.seq_of[other] = destination, source
        self.slot_of[source], self.slot_of[destination] = other, slot
        self.in_use[destination], self.in_use[source] = True, False
        self._freed_at[source] = self.steps
        if self.prefixes is not None:
            self.prefixes.released(source)
        self.moves += 1
        return True

    def _transfer(self, source: int, destination: int) -> bool:
        """Replace ``destination``'s cells (and their token ids and length) with a copy of
        all of ``source``'s; False, and ``destination`` emptied, if llama.cpp refused."""
        lib, ctx = self._lib, self._ctx
        size = lib.llama_state_seq_get_size_ext(ctx, source, FULL_STATE)
        state = np.empty(size, dtype=np.uint8)  # not kept: at 8B, 4096 cells are 512 MB
        data = state.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8))
        got = lib.llama_state_seq_get_data_ext(ctx, data, size, source, FULL_STATE) == size
        if not (got and lib.llama_state_seq_set_data_ext(ctx, data, size, destination, FULL_STATE)):
            lib.llama_memory_seq_rm(self.memory, destination, -1, -1)
            self.lengths[destination] = 0
            return False
        length = self.lengths[destination] = self.lengths[source]
        if self.prefixes is not None:
            tokens = self.prefixes.tokens
            tokens[destination, :length] = tokens[source, :length]
        return True
