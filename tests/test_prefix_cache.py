"""SlotPrefixes: which free slot a new sequence takes, and how much of it is reused."""

from __future__ import annotations

import numpy as np

from mlserver_streaming.engine.prefix_cache import SlotPrefixes


def held(prefixes: SlotPrefixes, slots_tokens: dict[int, list[int]]) -> np.ndarray:
    """Write each slot's tokens from position 0, release the slots in that order, and
    return the slots' lengths."""
    lengths = np.zeros(prefixes.tokens.shape[0], dtype=np.intp)
    for slot, tokens in slots_tokens.items():
        prefixes.write(np.full(len(tokens), slot), np.arange(len(tokens)), np.array(tokens))
        prefixes.released(slot)
        lengths[slot] = len(tokens)
    return lengths


def test_the_longest_shared_prefix_wins_but_never_the_whole_sequence() -> None:
    prefixes = SlotPrefixes(max_slots=3, context_length=16)
    lengths = held(prefixes, {0: [1, 2, 3, 9], 1: [1, 2, 3, 4, 5, 6], 2: [1, 2]})
    free = np.array([0, 1, 2])
    assert prefixes.choose(free, lengths, [1, 2, 3, 4, 7]) == (1, 4)
    assert prefixes.choose(free, lengths, [1, 2, 3, 4])[1] == 3  # the last is prefilled
    assert prefixes.choose(np.array([0, 2]), lengths, [1, 2, 3, 4, 7]) == (0, 3)


def test_a_short_match_takes_the_least_recently_released_slot() -> None:
    prefixes = SlotPrefixes(max_slots=3, context_length=16)
    lengths = held(prefixes, {2: [0, 5, 5, 5], 0: [0, 6, 6, 6], 1: [0, 7, 7, 7]})
    free = np.array([0, 1, 2])
    # Only the BOS is shared (1 of 12 tokens, not above 10%): slot 2, released first, goes,
    # and keeps its BOS.
    assert prefixes.choose(free, lengths, [0, *range(20, 31)]) == (2, 1)
    assert prefixes.choose(free, lengths, [0, 6, 8]) == (0, 2)
    assert prefixes.choose(free, lengths, [4]) == (2, 0)


def test_compact_takes_the_lowest_free_slot_without_a_shared_prefix() -> None:
    """Split KV: running slots kept together (llama.cpp batches consecutive ids only)."""
    prefixes = SlotPrefixes(max_slots=4, context_length=16, compact=True)
    lengths = held(prefixes, {3: [0, 5, 5, 5], 1: [0, 6, 6, 6], 2: [0, 7, 7, 7]})
    free = np.array([1, 2, 3])
    assert prefixes.choose(free, lengths, [0, *range(20, 31)]) == (1, 1)
    assert prefixes.choose(free, lengths, [0, 7, 7, 7, 8]) == (2, 4)  # a prefix still wins


def test_shared_prefix_lengths_match_a_slot_by_slot_count() -> None:
    """The vectorized count equals walking each slot's tokens until the first difference."""
    rng = np.random.default_rng(7)
    for _ in range(200):
        prefixes = SlotPrefixes(max_slots=5, context_length=12)
        lengths = np.zeros(5, dtype=np.intp)
        for slot in range(5):
            tokens = rng.integers(0, 3, rng.integers(0, 13)).tolist()
            lengths[slot] = len(tokens)
            prefixes.tokens[slot, : len(tokens)] = tokens
        ids = np.asarray(rng.integers(0, 3, rng.integers(1, 13)), dtype=np.int32)
        free = np.flatnonzero(rng.random(5) < 0.7) if rng.random() < 0.9 else np.arange(5)
        if free.size == 0:
            continue
        expected = []
        for slot in free:
            n = max(min(int(lengths[slot]), ids.size - 1), 0)
            differ = np.flatnonzero(prefixes.tokens[slot, :n] != ids[:n])
            expected.append(int(differ[0]) if differ.size else n)
        assert prefixes._common(free, lengths[free], ids).tolist() == expected
