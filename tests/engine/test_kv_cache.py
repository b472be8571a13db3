import numpy as np
import pytest

from mlserver_streaming.engine import KVCache, NoFreeSlotError, SequenceTooLongError, SlotError


@pytest.fixture
def cache() -> KVCache:
    return KVCache(n_layer=2, n_slots=3, n_head=4, max_len=8, head_dim=5)


def test_arrays_are_preallocated_float32_zeros(cache):
    assert cache.k.shape == cache.v.shape == (2, 3, 4, 8, 5)
    assert cache.k.dtype == cache.v.dtype == np.float32
    assert not cache.k.any() and not cache.v.any()
    assert (cache.n_slots, cache.max_len) == (3, 8)


def test_allocate_takes_the_lowest_free_slot(cache):
    assert [cache.allocate() for _ in range(3)] == [0, 1, 2]
    cache.release(1)
    assert cache.allocate() == 1


def test_allocate_when_full_raises(cache):
    for _ in range(3):
        cache.allocate()
    with pytest.raises(NoFreeSlotError, match="all 3 KV cache slots are in use"):
        cache.allocate()


def test_free_slots_counts_down_and_up(cache):
    assert cache.free_slots() == 3
    slot = cache.allocate()
    assert cache.free_slots() == 2
    cache.release(slot)
    assert cache.free_slots() == 3


def test_length_grows_with_advance_and_resets_on_release(cache):
    slot = cache.allocate()
    assert cache.length(slot) == 0
    cache.advance(np.array([slot]), 5)
    assert cache.length(slot) == 5
    cache.release(slot)
    assert cache.allocate() == slot
    assert cache.length(slot) == 0


@pytest.mark.parametrize(
    ("slot", "message"),
    [(3, r"slot must be in \[0, 3\), got 3"), (-1, r"got -1"), (1, "slot 1 is not allocated")],
    ids=["too-big", "negative", "free"],
)
def test_bad_slot_is_rejected(cache, slot, message):
    cache.allocate()
    with pytest.raises(SlotError, match=message):
        cache.length(slot)
    with pytest.raises(SlotError, match=message):
        cache.release(slot)


def test_check_append_rejects_overflow_with_numbers(cache):
    slot = cache.allocate()
    cache.advance(np.array([slot]), 6)
    cache.check_append([slot], 2)  # exactly full is fine
    with pytest.raises(SequenceTooLongError, match="holds 6 tokens; adding 3 would make 9"):
        cache.check_append([slot], 3)


def test_check_append_rejects_repeated_slots(cache):
    a, b = cache.allocate(), cache.allocate()
    with pytest.raises(SlotError, match="distinct"):
        cache.check_append([a, b, a], 1)


@pytest.mark.parametrize(
    ("slots", "expected"),
    [([2], slice(2, 3)), ([0, 1, 2], slice(0, 3)), ([1, 2], slice(1, 3))],
    ids=["single", "all", "tail"],
)
def test_rows_is_a_slice_for_consecutive_slots(slots, expected):
    assert KVCache.rows(np.asarray(slots)) == (expected, None)


@pytest.mark.parametrize(
    ("slots", "span", "offsets"),
    [([0, 2], slice(0, 3), [0, 2]), ([3, 4, 7], slice(3, 8), [0, 1, 4])],
    ids=["one-gap", "two-gaps"],
)
def test_rows_spans_a_few_idle_slots_as_a_view(slots, span, offsets):
    rows, members = KVCache.rows(np.asarray(slots))
    assert rows == span
    assert members is not None and members.tolist() == offsets


def test_rows_is_an_index_array_for_sparse_slots():
    rows, members = KVCache.rows(np.asarray([0, 9]))
    assert isinstance(rows, np.ndarray) and rows.tolist() == [0, 9]
    assert members is None


def test_check_append_takes_a_count_per_slot(cache):
    a, b = cache.allocate(), cache.allocate()
    cache.advance(np.asarray([a, b]), np.asarray([3, 5]))
    assert (cache.length(a), cache.length(b)) == (3, 5)
    cache.check_append([a, b], [cache.max_len - 3, 1])
    with pytest.raises(SequenceTooLongError, match=f"slot {b} holds 5 tokens"):
        cache.check_append([a, b], [1, cache.max_len - 4])
