"""The micro-batcher: who gets which rows back, batch limits, failures, shutdown."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from mlserver_streaming.classifier.batcher import BatcherStopped, MicroBatcher, split_by_sizes


@pytest.mark.parametrize(
    ("sizes", "expected"),
    [
        pytest.param([3], [[0, 1, 2]], id="one-caller"),
        pytest.param([1, 2], [[0], [1, 2]], id="two-callers"),
        pytest.param([2, 0, 1], [[0, 1], [], [2]], id="empty-part"),
    ],
)
def test_split_by_sizes_returns_consecutive_parts(sizes, expected):
    parts = split_by_sizes(np.arange(3), sizes)
    assert [part.tolist() for part in parts] == expected


def test_split_by_sizes_refuses_a_result_of_the_wrong_length():
    with pytest.raises(ValueError, match="result has 3 rows, callers sent 4"):
        split_by_sizes(np.arange(3), [2, 2])


class RecordingScorer:
    """Scores a row as its first feature × 10 and remembers each call's row count."""

    def __init__(self, fail_when: float | None = None):
        self.calls: list[int] = []
        self.fail_when = fail_when

    async def __call__(self, rows: np.ndarray) -> np.ndarray:
        self.calls.append(len(rows))
        await asyncio.sleep(0.01)  # a call takes time, so others queue meanwhile
        if self.fail_when is not None and (rows[:, 0] == self.fail_when).any():
            raise RuntimeError("estimator failed")
        return rows[:, 0] * 10


def rows(*values: float) -> np.ndarray:
    return np.array([[v, 0.0] for v in values])


@pytest.fixture
async def make_batcher():
    started: list[MicroBatcher] = []

    def make(scorer, max_batch_size=100, max_batch_time_s=0.05) -> MicroBatcher:
        batcher = MicroBatcher(scorer, max_batch_size, max_batch_time_s)
        batcher.start()
        started.append(batcher)
        return batcher

    yield make
    for batcher in started:
        await batcher.stop()


async def test_concurrent_callers_share_one_call_and_get_their_own_rows(make_batcher):
    scorer = RecordingScorer()
    batcher = make_batcher(scorer)
    requests = [rows(1), rows(2, 3), rows(4), rows(5, 6, 7)]
    results = await asyncio.gather(*(batcher.submit(r) for r in requests))
    assert [r.tolist() for r in results] == [[10], [20, 30], [40], [50, 60, 70]]
    assert scorer.calls == [7]


async def test_a_batch_never_exceeds_max_batch_size(make_batcher):
    scorer = RecordingScorer()
    batcher = make_batcher(scorer, max_batch_size=4)
    requests = [rows(i, i) for i in range(5)]  # 10 rows in callers of 2
    results = await asyncio.gather(*(batcher.submit(r) for r in requests))
    assert [r.tolist() for r in results] == [[10 * i, 10 * i] for i in range(5)]
    assert scorer.calls == [4, 4, 2]


async def test_a_caller_larger_than_the_batch_is_scored_alone(make_batcher):
    scorer = RecordingScorer()
    batcher = make_batcher(scorer, max_batch_size=2)
    result = await batcher.submit(rows(1, 2, 3))
    assert result.tolist() == [10, 20, 30]
    assert scorer.calls == [3]


async def test_a_lone_caller_is_scored_when_the_batch_time_ends(make_batcher):
    # Nobody else comes: without the batch timer it would wait forever (the 10 s bound is
    # far from 50 ms, so a slow machine does not decide it); it waits for company first.
    batcher = make_batcher(RecordingScorer(), max_batch_time_s=0.05)
    loop = asyncio.get_running_loop()
    start = loop.time()
    async with asyncio.timeout(10):
        assert (await batcher.submit(rows(1))).tolist() == [10]
    assert loop.time() - start >= 0.045  # not before the window (less timer resolution)


async def test_a_full_batch_is_scored_without_waiting_for_the_batch_time(make_batcher):
    scorer = RecordingScorer()
    batcher = make_batcher(scorer, max_batch_size=2, max_batch_time_s=3600)
    async with asyncio.timeout(10):  # an hour's window: only a full batch ends it this soon
        results = await asyncio.gather(batcher.submit(rows(1)), batcher.submit(rows(2)))
    assert [r.tolist() for r in results] == [[10], [20]] and scorer.calls == [2]


async def test_a_failed_call_fails_its_callers_and_the_loop_goes_on(make_batcher):
    batcher = make_batcher(RecordingScorer(fail_when=2))
    results = await asyncio.gather(
        batcher.submit(rows(1)), batcher.submit(rows(2)), return_exceptions=True
    )
    assert [str(r) for r in results] == ["estimator failed", "estimator failed"]
    assert (await batcher.submit(rows(3))).tolist() == [30]


async def test_a_cancelled_caller_does_not_disturb_the_others(make_batcher):
    scorer = RecordingScorer()
    batcher = make_batcher(scorer)
    leaving = asyncio.ensure_future(batcher.submit(rows(1)))
    staying = asyncio.ensure_future(batcher.submit(rows(2)))
    await asyncio.sleep(0)
    leaving.cancel()
    assert (await staying).tolist() == [20]
    assert scorer.calls == [1]


async def test_stop_answers_waiting_callers_with_a_retryable_error(make_batcher):
    batcher = make_batcher(RecordingScorer(), max_batch_time_s=10)
    waiting = asyncio.ensure_future(batcher.submit(rows(1)))
    await asyncio.sleep(0.01)
    await batcher.stop()
    with pytest.raises(BatcherStopped, match="unloaded") as info:
        await waiting
    assert info.value.retryable
    with pytest.raises(BatcherStopped, match="not loaded"):
        await batcher.submit(rows(2))
