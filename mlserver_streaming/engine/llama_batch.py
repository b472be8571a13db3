"""A llama_batch over numpy arrays we own (not llama_batch_init's mallocs), so a step fills it
with a few vector writes instead of a ctypes write per token and field."""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from typing import Any

import numpy as np


class NumpyBatch:
    """Room for ``n`` tokens, one sequence id each (``seq_id[i]`` points at ``seq[i]``)."""

    def __init__(self, lib: Any, n: int) -> None:
        self.arrays: dict[str, np.ndarray] = {
            "token": np.zeros(n, dtype=np.int32),
            "pos": np.zeros(n, dtype=np.int32),
            "n_seq_id": np.ones(n, dtype=np.int32),
            "seq": np.zeros(n, dtype=np.int32),
            "logits": np.zeros(n, dtype=np.int8),
        }
        seq_ptr = ctypes.POINTER(lib.llama_seq_id)
        base = self.arrays["seq"].ctypes.data
        # The batch points into these: they live as long as we do.
        self._seq_ids = (seq_ptr * n)(*(ctypes.cast(base + 4 * i, seq_ptr) for i in range(n)))

        def ptr(name: str, ctype: Any) -> Any:
            return self.arrays[name].ctypes.data_as(ctypes.POINTER(ctype))

        self.batch = batch = lib.llama_batch()
        batch.token = ptr("token", lib.llama_token)
        batch.embd = None
        batch.pos = ptr("pos", lib.llama_pos)
        batch.n_seq_id = ptr("n_seq_id", ctypes.c_int32)
        batch.seq_id = ctypes.cast(self._seq_ids, ctypes.POINTER(seq_ptr))
        batch.logits = ptr("logits", ctypes.c_int8)

    def fill(self, tokens: np.ndarray, pos: np.ndarray, seq: np.ndarray, wants: np.ndarray) -> Any:
        """The llama_batch holding these tokens at these positions of these sequences, with
        logits for the tokens where ``wants`` is 1."""
        n, a = tokens.size, self.arrays
        a["token"][:n], a["pos"][:n], a["seq"][:n], a["logits"][:n] = tokens, pos, seq, wants
        self.batch.n_tokens = n
        return self.batch

    def fill_one(self, token: int, pos: int, seq: int) -> Any:
        """The batch of one token, with its logits (a decode of one sequence)."""
        a = self.arrays
        a["token"][0], a["pos"][0], a["seq"][0], a["logits"][0] = token, pos, seq, 1
        self.batch.n_tokens = 1
        return self.batch


def chunk_layout(
    seqs: Sequence[int] | np.ndarray,
    token_ids: Sequence[Sequence[int]],
    counts: Sequence[int],
    lengths: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Each sequence's chunk (``counts[i]`` tokens) flat, at its positions from ``lengths``:
    tokens, positions, sequence ids, and logits wanted for each chunk's last token."""
    flat = np.fromiter((t for chunk in token_ids for t in chunk), dtype=np.int64)
    seq = np.asarray(seqs, dtype=np.int32)
    seq_of = np.repeat(seq, counts)
    starts = np.repeat(lengths[seq] - np.cumsum([0, *counts[:-1]]), counts)
    pos = (starts + np.arange(flat.size)).astype(np.int32)
    wants = np.zeros(flat.size, dtype=np.int8)
    wants[np.cumsum(counts) - 1] = 1
    return flat, pos, seq_of, wants


class LogitsViews:
    """Numpy views of llama.cpp's logits buffer, kept by its address and row count:
    ``np.ctypeslib.as_array`` builds a ctypes array type on every call."""

    def __init__(self, vocab_size: int, most: int) -> None:
        self._vocab_size, self._most = vocab_size, most
        self._views: dict[tuple[int, int], np.ndarray] = {}

    def rows(self, pointer: Any, rows: int) -> np.ndarray:
        """The first ``rows`` rows of logits at ``pointer`` (``llama_get_logits``)."""
        key = (ctypes.addressof(pointer.contents), rows)
        view = self._views.get(key)
        if view is None:
            if len(self._views) >= self._most:  # the buffer moved: forget the old ones
                self._views.clear()
            view = self._views[key] = np.ctypeslib.as_array(pointer, shape=(rows, self._vocab_size))
        return view
