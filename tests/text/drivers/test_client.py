"""The runtime's side of the engine: capacity, records, deltas to queues, metrics, loss."""

from __future__ import annotations

import pytest

from mlserver_streaming.errors import ServerAtCapacity
from mlserver_streaming.events import FinishReason
from mlserver_streaming.text.core.messages import Cancel, Command, Submit
from mlserver_streaming.text.core.step_output import StepOutput
from mlserver_streaming.text.drivers.client import EngineClient, EngineUnavailable
from mlserver_streaming.text.drivers.metrics import GenerationMetrics
from mlserver_streaming.text.sample.generation import Delta
from mlserver_streaming.text.sample.params import GenerationParams


class RecordingDriver:
    def __init__(self) -> None:
        self.sent: list[Command] = []
        self.stopped = False

    def send(self, command: Command) -> None:
        self.sent.append(command)

    async def stop(self) -> None:
        self.stopped = True


def make_client(name: str, max_running: int = 1, max_waiting: int = 1) -> EngineClient:
    client = EngineClient(max_running, max_waiting, GenerationMetrics(name, "v1"))
    client.driver = RecordingDriver()
    return client


PARAMS = GenerationParams(max_tokens=8, seed=42)


async def test_submit_sends_the_request_and_refuses_past_capacity():
    client = make_client("client-capacity")
    first = client.submit([1, 2, 3], PARAMS, deadline=10.0)
    client.submit([4], PARAMS, deadline=10.0)
    with pytest.raises(ServerAtCapacity):
        client.submit([5], PARAMS, deadline=10.0)
    sent = client.driver.sent  # type: ignore[union-attr]
    assert [type(c) for c in sent] == [Submit, Submit]
    assert sent[0].prompt_ids == [1, 2, 3] and sent[0].params is PARAMS  # type: ignore[union-attr]
    assert (first.prompt_tokens, first.seed) == (3, 42)
    client.cancel(first)
    assert sent[-1] == Cancel(first.request_id)


async def test_deliver_fills_the_record_and_the_queue():
    client = make_client("client-deliver")
    record = client.submit([1, 2], PARAMS, deadline=10.0)
    rid = record.request_id
    client.deliver(StepOutput({rid: Delta("a", [7])}, {rid: 0.5}, 2, 1, 0, step_done=True))
    client.deliver(StepOutput({rid: Delta("b", [8, 9], finish_reason=FinishReason.LENGTH)}))
    assert [record.deltas.get_nowait().text for _ in range(2)] == ["a", "b"]
    assert (record.completion_tokens, record.finish_reason) == (3, FinishReason.LENGTH)
    assert not client.inflight
    client.deliver(StepOutput({rid: Delta("late", [1])}))  # after the end: ignored
    assert record.deltas.empty()


async def test_a_lost_engine_ends_every_request_and_refuses_new_ones():
    client = make_client("client-lost", max_waiting=3)
    records = [client.submit([1], PARAMS, deadline=10.0) for _ in range(2)]
    client.lost("the text engine process exited unexpectedly (exit code -9)")
    for record in records:
        last = record.deltas.get_nowait()
        assert last.finish_reason is FinishReason.ERROR and "exit code -9" in (last.error or "")
    with pytest.raises(EngineUnavailable, match="exit code -9") as info:
        client.submit([1], PARAMS, deadline=10.0)
    assert info.value.status_code == 503
