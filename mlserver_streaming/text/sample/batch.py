"""Next-token choice for a whole decode step at once: a few numpy calls over [B, V].

The per-request `TokenChooser` spends most of its time in numpy call overhead (~10 calls on
4096 logits per token); at 32 streams that was 28% of the engine process. Here every stage
runs over all rows of a step together, while each row gets exactly the token its own chooser
would pick: the same float32 scores, the same float64 cumulative sums (element by element,
in the same order), the same tie rules and one `rng.random()` from the row's own generator.
Variable-size kept sets stay as boolean masks over the candidate columns: a dropped column
weighs 0.0, and adding 0.0 leaves a cumulative sum bit-identical to the compacted one.
"""

from __future__ import annotations

import weakref
from collections.abc import Container, Sequence

import numpy as np

from .sampling import (
    Choice,
    FloatArray,
    IdArray,
    Temperature,
    TokenChooser,
    TopK,
    TopP,
    choice_with_logprobs,
)

BoolArray = np.ndarray
WarperKey = tuple[tuple[str, float], ...]

_KEYS: weakref.WeakKeyDictionary[TokenChooser, WarperKey | None] = weakref.WeakKeyDictionary()

MIN_BATCHED_ROWS = 2
"""A lone row is quicker through its own chooser: batching's fixed cost buys nothing."""

MAX_BATCHED_CANDIDATES = 256
"""Wider candidate sets go row by row: over thousands of scores numpy is busy computing,
not paying call overhead, and sorting a [B, V] array would cost more than the chooser's
sort of a top-64 prefix."""


def choose_batch(
    logits: FloatArray,
    choosers: Sequence[TokenChooser],
    histories: Sequence[IdArray],
    min_rows: int = MIN_BATCHED_ROWS,
) -> list[Choice]:
    """Each row's Choice, as `choosers[i](logits[i], histories[i])` would make it.

    Rows are grouped by warper configuration (usually one group). A group smaller than
    min_rows, or whose warpers this module does not batch, asks each row's own chooser.
    """
    if len(choosers) < min_rows:  # one stream: its own chooser, without the grouping
        each = zip(choosers, logits, histories, strict=True)
        return [chooser(row, history) for chooser, row, history in each]
    logits = np.asarray(logits, dtype=np.float32)
    groups: dict[WarperKey | None, list[int]] = {}
    for row, chooser in enumerate(choosers):
        groups.setdefault(warper_key(chooser), []).append(row)
    alone = [r for key, rows in groups.items() if key is None or len(rows) < min_rows for r in rows]
    choices: list[Choice | None] = [None] * len(choosers)
    for row in alone:  # the row's own chooser, on the raw logits
        choices[row] = choosers[row](logits[row], histories[row])
    if len(alone) < len(choosers):
        scores = penalised(logits, choosers, histories, skip=set(alone))
        tokens = np.empty(len(choosers), dtype=np.intp)
        for key, rows in groups.items():
            if key is None or len(rows) < min_rows:
                continue
            if key[0][0] == "greedy":
                tokens[rows] = np.argmax(scores[rows], axis=1)  # first maximum: lower id
            else:
                rngs = [choosers[row].rng for row in rows]
                group = scores if len(rows) == len(choosers) else scores[rows]
                tokens[rows] = sample_group(group, key, rngs)  # type: ignore[arg-type]
        for row, choice in enumerate(choices):
            if choice is None:
                n = choosers[row].logprobs
                choices[row] = choice_with_logprobs(logits[row], int(tokens[row]), n)
    return choices  # type: ignore[return-value]


def warper_key(chooser: TokenChooser) -> WarperKey | None:
    """`_warper_key`, worked out once per chooser (its warpers never change)."""
    try:
        return _KEYS[chooser]
    except KeyError:
        key = _KEYS[chooser] = _warper_key(chooser)
        return key


def _warper_key(chooser: TokenChooser) -> WarperKey | None:
    """The chooser's warpers as a hashable key; None when some are beyond this module.

    Top-p must come last: it is the only warper that leaves a variable number of candidates.
    Sampling needs a top-k of at most MAX_BATCHED_CANDIDATES to be worth batching.
    """
    if chooser.rng is None:
        return (("greedy", 0.0),)
    key: list[tuple[str, float]] = []
    for warp in chooser.warpers:
        if key and key[-1][0] == "top_p":
            return None
        if type(warp) is TopK:
            key.append(("top_k", warp.k))
        elif type(warp) is Temperature:
            key.append(("temperature", float(warp.temperature)))
        elif type(warp) is TopP:
            key.append(("top_p", warp.p))
        else:
            return None
    narrow = any(name == "top_k" and k <= MAX_BATCHED_CANDIDATES for name, k in key)
    return tuple(key) if narrow else None


def penalised(
    logits: FloatArray,
    choosers: Sequence[TokenChooser],
    histories: Sequence[IdArray],
    skip: Container[int] = (),
) -> FloatArray:
    """Logits with each row's repetition penalty applied to its seen tokens (HF style).

    Rows in skip are left as they are (their chooser applies its own penalty).
    """
    rows = [
        r
        for r, c in enumerate(choosers)
        if c.penalty is not None and len(histories[r]) and r not in skip
    ]
    if not rows:
        return logits
    seen = [np.asarray(histories[r], dtype=np.intp) for r in rows]
    row_of = np.repeat(np.asarray(rows, dtype=np.intp), [s.size for s in seen])
    col_of = np.concatenate(seen)
    penalties = np.asarray([choosers[r].penalty.penalty for r in rows], dtype=np.float32)  # type: ignore[union-attr]
    penalty = np.repeat(penalties, [s.size for s in seen])
    out = logits.copy()
    picked = out[row_of, col_of]
    out[row_of, col_of] = np.where(picked > 0, picked / penalty, picked * penalty)
    return out


def sample_group(
    scores: FloatArray, key: WarperKey, rngs: Sequence[np.random.Generator]
) -> IdArray:
    """Token ids for rows sharing one warper configuration, one draw per row."""
    ids: IdArray | None = None  # None: the columns are the token ids
    kept: BoolArray | None = None
    for name, value in key:
        if name == "top_k":
            ids, scores = top_k_rows(scores, int(value))
        elif name == "temperature":
            scores = scores / np.float32(value)
        else:
            kept = nucleus_mask(scores, value)
    columns = sample_columns(scores, kept, rngs)
    if ids is None:
        return columns
    return np.take_along_axis(ids, columns[:, None], axis=1)[:, 0]


def top_k_mask(scores: FloatArray, k: int) -> BoolArray:
    """Each row's k highest scores; ties at the cut go to the lower column (`top_k_ids`)."""
    n = scores.shape[1]
    kth = np.partition(scores, n - k, axis=1)[:, n - k : n - k + 1]
    at_least = scores >= kth
    if np.count_nonzero(at_least) == scores.shape[0] * k:
        return at_least  # every row holds at least k: exactly k each, no surplus ties
    above = scores > kth
    need = k - np.count_nonzero(above, axis=1)
    ranks = np.cumsum(scores == kth, axis=1)
    return above | ((scores == kth) & (ranks <= need[:, None]))


def top_k_rows(scores: FloatArray, k: int) -> tuple[IdArray, FloatArray]:
    """The k best (ids, scores) of each row, ids ascending: a dense [B, k] candidate set."""
    b, n = scores.shape
    if k >= n:
        return np.broadcast_to(np.arange(n), (b, n)), scores
    flat = np.flatnonzero(top_k_mask(scores, k))  # row-major: each row's ids ascending
    return (flat % n).reshape(b, k), scores.ravel().take(flat).reshape(b, k)


def nucleus_mask(scores: FloatArray, p: float) -> BoolArray:
    """Each row's smallest candidate set reaching p (ties: lower column), as `nucleus_ids`.

    One full sort of the (few) candidates: `nucleus_ids` sorts a top-m prefix of the same
    order (weight descending, then lower column), so both cut at the same place.
    """
    b, n = scores.shape
    weights = np.exp(scores - scores.max(axis=1, keepdims=True))
    targets = p * weights.sum(axis=1, dtype=np.float64)
    order = np.argsort(-weights, axis=1, kind="stable")
    rows = np.arange(b)[:, None]
    cdf = np.cumsum(weights[rows, order], axis=1, dtype=np.float64)
    cuts = (cdf < targets[:, None]).sum(axis=1)  # searchsorted "left"; n keeps them all
    ranks = np.empty((b, n), dtype=np.intp)
    ranks[rows, order] = np.arange(n)
    return ranks <= cuts[:, None]


def sample_columns(
    scores: FloatArray, kept: BoolArray | None, rngs: Sequence[np.random.Generator]
) -> IdArray:
    """Inverse-CDF column of each row over its kept columns (ascending), one draw per row.

    Like `sample_index`: the first kept column whose CDF exceeds the draw, else the last.
    """
    if kept is not None:
        scores = np.where(kept, scores, np.float32(-np.inf))
    weights = np.exp(scores - scores.max(axis=1, keepdims=True))
    cdf = np.cumsum(weights, axis=1, dtype=np.float64)
    draws = np.array([rng.random() for rng in rngs])
    above = cdf > (draws * cdf[:, -1])[:, None]
    if kept is not None:
        above &= kept
    first = above.argmax(axis=1)
    found = above.any(axis=1)
    if found.all():
        return first
    last = scores.shape[1] - 1 if kept is None else kept.shape[1] - 1 - kept[:, ::-1].argmax(1)
    return np.where(found, first, last)
