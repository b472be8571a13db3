"""SlotPrefixes: which free slot a new sequence takes, and how much of it is reused."""

from __future__ import annotations

import numpy as np

from mlserver_streaming.engine.prefix_cache import COPY_RATIO, SlotPrefixes


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


def test_among_slots_sharing_the_longest_prefix_the_least_recently_released() -> None:
    """A shared system prompt in several slots evicts the oldest of them, not the lowest."""
    prefixes = SlotPrefixes(max_slots=3, context_length=16)
    lengths = held(prefixes, {2: [1, 2, 3, 8], 0: [1, 2, 3, 9], 1: [1, 2, 3, 7]})
    assert prefixes.choose(np.array([0, 1, 2]), lengths, [1, 2, 3, 4, 5]) == (2, 3)


def test_a_short_match_takes_the_least_recently_released_slot() -> None:
    prefixes = SlotPrefixes(max_slots=3, context_length=16)
    lengths = held(prefixes, {2: [0, 5, 5, 5], 0: [0, 6, 6, 6], 1: [0, 7, 7, 7]})
    free = np.array([0, 1, 2])
    # Only the BOS is shared (1 of 12 tokens, not above 10%): slot 2, released first, goes,
    # and keeps its BOS.
    assert prefixes.choose(free, lengths, [0, *range(20, 31)]) == (2, 1)
    assert prefixes.choose(free, lengths, [0, 6, 8]) == (0, 2)
    assert prefixes.choose(free, lengths, [4]) == (2, 0)


def test_compact_keeps_the_slots_in_use_consecutive_without_a_shared_prefix() -> None:
    """Split KV: running slots kept together (llama.cpp batches consecutive ids only),
    least recently released first among the slots that do that."""
    prefixes = SlotPrefixes(max_slots=6, context_length=16, compact=True)
    lengths = held(prefixes, {3: [0, 5, 5, 5], 1: [0, 6, 6, 6], 2: [0, 7, 7, 7]})
    for slot in (4, 1, 5, 3, 2):  # release order: 4 is the least recently released
        prefixes.released(slot)
    other = [0, *range(20, 31)]  # shares only BOS with every slot
    # slot 0 in use: its neighbour 1 (not 4, the least recently released of all)
    assert prefixes.choose(np.array([1, 2, 3, 4, 5]), lengths, other) == (1, 1)
    # slots 0 and 4 in use: the gaps 1-3 keep one run; 1 was released before 2 and 3
    assert prefixes.choose(np.array([1, 2, 3, 5]), lengths, other) == (1, 1)
    # slots 2 and 3 in use: the neighbours 1 and 4; 4 was released first
    assert prefixes.choose(np.array([0, 1, 4, 5]), lengths, other) == (4, 0)
    # nothing in use: the least recently released of all (0: never used), as without compact
    assert prefixes.choose(np.arange(6), lengths, other) == (0, 0)
    # a prefix still wins over the run
    assert prefixes.choose(np.array([1, 2, 3, 4, 5]), lengths, [0, 7, 7, 7, 8]) == (2, 4)


def test_one_stream_of_rotating_prompts_keeps_them_all_cached_with_compact() -> None:
    """At one stream nothing else is in use: each prompt of a rotation finds its own
    slot again (taking the lowest free slot every time kept only the last one)."""
    prefixes = SlotPrefixes(max_slots=8, context_length=32, compact=True)
    prompts = [[0, 10 + p, 11 + p, 12 + p, 13 + p, 14 + p] for p in range(0, 60, 10)]
    lengths = np.zeros(8, dtype=np.intp)
    kept = []
    for turn in range(18):
        prompt = prompts[turn % len(prompts)]
        slot, reused = prefixes.choose(np.arange(8), lengths, prompt)
        kept.append(reused)
        prefixes.tokens[slot, : len(prompt)] = prompt
        lengths[slot] = len(prompt)
        prefixes.released(slot)
    assert kept[len(prompts) :] == [len(prompts[0]) - 1] * (18 - len(prompts))


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


def test_a_slot_in_use_that_shares_a_longer_prefix_is_the_donor() -> None:
    prefixes = SlotPrefixes(max_slots=4, context_length=64)
    lengths = held(prefixes, {0: [1, 2, 3, 4, 5, 6, 7], 1: [1, 2, 9], 2: [1, 8, 8, 8]})
    in_use = np.array([0, 1, 2])
    assert prefixes.donor(in_use, lengths, [1, 2, 3, 4, 5, 0], kept=0) == (0, 5)
    assert prefixes.donor(in_use, lengths, [1, 2, 3, 4, 5, 0], kept=5) is None  # no longer
    assert prefixes.donor(in_use, lengths, [1, 7, 7, 7], kept=0) is None  # a shared BOS
    assert prefixes.donor(np.array([], np.intp), lengths, [1, 2, 3], kept=0) is None


def test_a_donor_holding_far_more_than_it_shares_is_not_copied() -> None:
    prefixes = SlotPrefixes(max_slots=2, context_length=256)
    long = [1, 2, 3] + [9] * (COPY_RATIO * 3 - 3)
    lengths = held(prefixes, {0: long})
    assert prefixes.donor(np.array([0]), lengths, [1, 2, 3, 4], kept=0) == (0, 3)
    lengths[0] += 1  # one cell more than COPY_RATIO per shared token
    assert prefixes.donor(np.array([0]), lengths, [1, 2, 3, 4], kept=0) is None
