"""Split KV decodes one run of sequence ids per pass: pad the gaps between decoding slots.

llama.cpp's non-unified KV cache (one buffer per sequence) puts only a run of consecutive
sequence ids, in batch order, into one ubatch (``llama_batch_allocr::split_equal`` with
``sequential``): slots 3, 4 and 6 decode in two passes over the weights. A pad token in slot
5 — at that slot's next position, no logits, its cell removed after the step — makes it one
pass for one more row. A pass costs as much as a few rows (``rows_per_pass``: ~1 at the
4M shakespeare model, ~3 at an 88M one in Q8_0, ~9 in f32), so only gaps up to that many
slots are padded; a longer one (a few sequences left, far apart) is cheaper as a pass.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

PAD_TOKEN = 0
"""The id a pad feeds: any valid one (its logits are not computed, its cell is dropped)."""

MIN_IDLE_STEPS = 2
"""Decode steps a free slot stays free before a sequence is moved into it: in a busy server a
new request takes a freed slot within a step or two (its prefix may be cached there too)."""


class PaddedStep(NamedTuple):
    """One decode step as one run: the batch's arrays in sequence order, the pads' slots,
    and for each logits row (real tokens, in batch order) its index in the caller's order."""

    tokens: np.ndarray
    pos: np.ndarray
    seq: np.ndarray
    wants: np.ndarray
    pads: np.ndarray
    rows: np.ndarray


def pad_gaps(
    tokens: np.ndarray,
    seq: np.ndarray,
    lengths: np.ndarray,
    context_length: int,
    max_gap: int,
) -> PaddedStep | None:
    """The step in ascending sequence order, with a pad token in each slot of every gap
    between decoding slots that is at most ``max_gap`` slots long and has no full slot
    (a longer gap costs more rows than the pass it saves: ``rows_per_pass``); None when
    ``seq`` (distinct slots) is one ascending run already."""
    ascending = seq.size < 2 or bool((seq[1:] > seq[:-1]).all())
    if ascending and int(seq[-1]) - int(seq[0]) + 1 == seq.size:
        return None
    ordered = seq if ascending else np.sort(seq)
    pads = [
        np.arange(a + 1, b, dtype=np.int32)
        for a, b in zip(ordered[:-1].tolist(), ordered[1:].tolist(), strict=True)
        if 1 < b - a <= max_gap + 1 and (lengths[a + 1 : b] < context_length).all()
    ]
    if ascending and not pads:
        return None  # every gap is cheaper as a pass: the batch as it is
    return _in_order(tokens, seq, lengths, np.concatenate([np.empty(0, np.int32), *pads]))


def _in_order(
    tokens: np.ndarray, seq: np.ndarray, lengths: np.ndarray, pads: np.ndarray
) -> PaddedStep:
    every = np.concatenate([seq, pads])
    order = np.argsort(every, kind="stable")
    n = seq.size
    ordered = every[order]
    return PaddedStep(
        tokens=np.concatenate([tokens, np.full(pads.size, PAD_TOKEN, np.int32)])[order],
        pos=lengths[ordered].astype(np.int32),
        seq=ordered.astype(np.int32),
        wants=(order < n).astype(np.int8),
        pads=pads,
        rows=order[order < n],
    )


def rows_per_pass(
    decode: Callable[[int], None],
    most: int,
    repeats: int = 4,
    clock: Callable[[], float] = time.perf_counter,
) -> int:
    """How many more rows in one decode cost as much as one more pass: ``decode(k)`` runs
    a step of k slots; a step of 1 and one of ``most`` (the fastest of ``repeats`` calls
    after one discarded: same shapes in a row, as a served step) give a pass's fixed cost
    F and a row's R; the answer is floor(F / R), within [0, most]."""
    if most < 2:
        return 0

    def seconds(k: int) -> float:
        decode(k)  # the graph for this shape, and warm caches
        times = []
        for _ in range(repeats):
            begin = clock()
            decode(k)
            times.append(clock() - begin)
        return min(times)

    one, many = seconds(1), seconds(most)
    row = max(many - one, 0.0) / (most - 1)
    fixed = one - row
    if row <= 0:
        return most
    return int(min(max(fixed / row, 0.0), most))


def next_move(
    seq: np.ndarray, in_use: np.ndarray, idle: np.ndarray, min_idle: int = MIN_IDLE_STEPS
) -> tuple[int, int] | None:
    """The one move (source, destination) that brings a decode step's sequences ``seq``
    (distinct ids) closest to one run: of the windows of ``seq.size`` consecutive ids
    made only of decoding sequences and of free ones ``idle`` for ``min_idle`` steps, the
    first holding the most decoding ones; the decoding sequence farthest outside it goes to
    its lowest free id. None when ``seq`` is a run already or no window fits (a gap in use,
    or freed just now)."""
    n = seq.size
    if n < 2 or int(seq.max()) - int(seq.min()) + 1 == n:
        return None
    decoding = np.zeros(in_use.size, dtype=np.intp)
    decoding[seq] = 1
    room = decoding.astype(bool) | (~in_use & (idle >= min_idle))
    held = _window_sums(decoding, n)
    fits = _window_sums(room.astype(np.intp), n) == n
    if not fits.any():
        return None
    start = int(np.flatnonzero(fits)[np.argmax(held[fits])])
    end = start + n - 1
    distance = np.maximum(start - seq, seq - end)  # > 0 outside the window
    source = int(seq[np.argmax(distance)])
    destination = start + int(np.flatnonzero(decoding[start : end + 1] == 0)[0])
    return source, destination


def _window_sums(values: np.ndarray, n: int) -> np.ndarray:
    """Sum of every ``n`` consecutive values (window i starts at i)."""
    total = np.concatenate([[0], np.cumsum(values)])
    return total[n:] - total[:-n]
