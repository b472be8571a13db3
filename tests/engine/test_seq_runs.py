"""pad_gaps: a split-KV decode step as one ascending run of sequence ids."""

from __future__ import annotations

import numpy as np

from mlserver_streaming.engine.seq_runs import (
    MIN_IDLE_STEPS,
    PAD_TOKEN,
    next_move,
    pad_gaps,
    rows_per_pass,
)

I32 = np.int32


def step(slots: list[int], lengths: list[int], context: int = 8, max_gap: int = 8):  # type: ignore[no-untyped-def]
    tokens = np.array([100 + s for s in slots], I32)
    return pad_gaps(tokens, np.array(slots, I32), np.array(lengths), context, max_gap)


def test_one_ascending_run_needs_no_pads() -> None:
    assert step([2, 3, 4], [0, 0, 5, 6, 7]) is None
    assert step([4], [0] * 5) is None


def test_gaps_get_a_pad_at_their_next_position_without_logits() -> None:
    padded = step([0, 3, 4], [5, 2, 0, 6, 7])
    assert padded is not None
    assert padded.seq.tolist() == [0, 1, 2, 3, 4]
    assert padded.pos.tolist() == [5, 2, 0, 6, 7]  # each slot's own next position
    assert padded.tokens.tolist() == [100, PAD_TOKEN, PAD_TOKEN, 103, 104]
    assert padded.wants.tolist() == [1, 0, 0, 1, 1]
    assert padded.pads.tolist() == [1, 2]
    assert padded.rows.tolist() == [0, 1, 2]  # logits rows in the caller's order


def test_a_gap_with_a_full_slot_stays_a_gap() -> None:
    assert step([0, 3], [1, 8, 2, 4], context=8) is None  # slot 1 has no free position
    padded = step([0, 3, 5], [1, 8, 2, 4, 0, 0], context=8)
    assert padded is not None and padded.pads.tolist() == [4]


def test_only_gaps_up_to_max_gap_are_padded() -> None:
    # gaps: 1 (slot 1), 3 (slots 3-5), 2 (slots 7-8)
    lengths = [0] * 10
    padded = step([0, 2, 6, 9], lengths, max_gap=2)
    assert padded is not None and padded.pads.tolist() == [1, 7, 8]
    assert padded.seq.tolist() == [0, 1, 2, 6, 7, 8, 9]
    assert step([0, 2, 6, 9], lengths, max_gap=0) is None  # passes all: the batch as it is


def test_slots_out_of_order_are_sorted_and_their_rows_mapped_back() -> None:
    padded = step([4, 2, 3], [0, 0, 1, 2, 3])
    assert padded is not None
    assert padded.seq.tolist() == [2, 3, 4] and padded.pads.size == 0
    assert padded.tokens.tolist() == [102, 103, 104]
    # row i of llama.cpp's logits belongs to caller index rows[i]
    assert padded.rows.tolist() == [1, 2, 0]
    logits = np.array([[2.0], [3.0], [4.0]])  # in batch (sorted) order
    out = np.empty_like(logits)
    out[padded.rows] = logits
    assert out[:, 0].tolist() == [4.0, 2.0, 3.0]


class FakeStep:
    """A decode of k rows that costs ``fixed + k * row`` seconds on its own clock."""

    def __init__(self, fixed: float, row: float) -> None:
        self.fixed, self.row, self.now = fixed, row, 0.0

    def __call__(self, k: int) -> None:
        self.now += self.fixed + k * self.row

    def clock(self) -> float:
        return self.now


def test_rows_per_pass_is_a_pass_cost_over_a_row_cost() -> None:
    """floor(F / R), clipped to [0, most]."""
    for fixed, row, expected in ((9.0, 3.0, 3), (1.0, 1.0, 1), (0.5, 1.0, 0), (100.0, 1.0, 8)):
        fake = FakeStep(fixed, row)
        assert rows_per_pass(fake, 8, clock=fake.clock) == expected
    assert rows_per_pass(lambda k: None, 1) == 0  # one slot: nothing to pad


def move(decoding: list[int], in_use: list[int], idle: dict[int, int] | None = None, size: int = 8):  # type: ignore[no-untyped-def]
    """next_move over ``size`` slots: ``in_use`` beyond the decoding ones; every free slot
    idle for MIN_IDLE_STEPS unless ``idle`` says otherwise."""
    used = np.zeros(size, bool)
    used[decoding + in_use] = True
    steps = np.full(size, MIN_IDLE_STEPS)
    for slot, n in (idle or {}).items():
        steps[slot] = n
    return next_move(np.array(decoding, I32), used, steps)


def test_a_run_needs_no_move() -> None:
    assert move([2, 3, 4], []) is None
    assert move([5, 3, 4], []) is None  # any order
    assert move([6], []) is None


def test_the_sequence_farthest_out_goes_to_the_lowest_gap_of_the_fullest_window() -> None:
    assert move([0, 1, 3], []) == (3, 2)  # window 0-2 holds two
    assert move([0, 5, 6, 7], []) == (0, 4)  # window 4-7: one move, not three
    assert move([0, 2, 3], []) == (3, 1)  # ties: the first window
    assert move([0, 3, 6], []) == (6, 1)  # the farthest out first


def test_no_move_into_a_slot_in_use_or_freed_just_now() -> None:
    assert move([0, 2], [1], size=3) is None  # 1 prefills: no window of two fits
    assert move([0, 2], [1], size=4) == (0, 3)  # but 2-3 does
    assert move([0, 2], [], idle={1: MIN_IDLE_STEPS - 1}, size=3) is None  # one may come
    assert move([0, 2], [], idle={1: MIN_IDLE_STEPS - 1}, size=4) == (0, 3)
