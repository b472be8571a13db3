"""A request's record: a reader takes its deltas, and never waits past its deadline."""

from __future__ import annotations

import time

import pytest

from mlserver_streaming.events import FinishReason
from mlserver_streaming.text.record import DEADLINE_GRACE_S, RequestRecord, read_deltas
from mlserver_streaming.text.sample.generation import Delta

pytestmark = pytest.mark.timeout(30)


async def test_a_lost_request_ends_for_its_reader_at_its_deadline() -> None:
    past = time.monotonic() - DEADLINE_GRACE_S - 1  # the engine never answered
    record = RequestRecord(1, prompt_tokens=3, seed=0, deadline=past)
    record.deltas.put_nowait(Delta(text="To"))
    cancelled: list[RequestRecord] = []
    deltas = [d async for d in read_deltas(record, cancelled.append)]
    assert [d.text for d in deltas] == ["To", ""]
    assert deltas[-1].finish_reason is FinishReason.TIMEOUT and deltas[-1].retryable
    assert cancelled == []  # it ended: nothing left to cancel


async def test_without_a_deadline_the_reader_takes_every_delta_to_the_end() -> None:
    record = RequestRecord(1, prompt_tokens=3, seed=0)
    for delta in (Delta(text="To"), Delta(text=" be", finish_reason=FinishReason.LENGTH)):
        record.deltas.put_nowait(delta)
    deltas = [d async for d in read_deltas(record, lambda r: None, coalesce=False)]
    assert [d.text for d in deltas] == ["To", " be"]
