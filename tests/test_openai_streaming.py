"""ChoiceStreams: n choices merged in arrival order, keep-alives while silent, cancel on close."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import orjson
import pytest

from mlserver_streaming.events import FinishReason
from mlserver_streaming.openai.streaming import (
    DEFAULT_KEEPALIVE_S,
    KEEPALIVE_ENV,
    ChoiceStreams,
    keepalive_interval,
    sse,
)
from mlserver_streaming.text.generation import Delta

pytestmark = pytest.mark.timeout(10)


class FakeGenerator:
    """`deltas(record)` reads the record's queue, as TextGenerator's; records when a reader
    left early (what cancels a sequence)."""

    def __init__(self) -> None:
        self.left_early: list[int] = []

    async def deltas(self, record: asyncio.Queue) -> AsyncIterator[Delta]:
        finished = False
        try:
            while not finished:
                delta = await record.get()
                finished = delta.finish_reason is not None
                yield delta
        finally:
            if not finished:
                self.left_early.append(id(record))


async def test_choices_interleave_in_arrival_order():
    model, queues = FakeGenerator(), [asyncio.Queue(), asyncio.Queue()]
    streams = await ChoiceStreams.open(model, queues)  # type: ignore[arg-type]
    got = []
    for index, delta in [
        (1, Delta(text="b")),
        (0, Delta(text="a", finish_reason=FinishReason.LENGTH)),
        (1, Delta(text="c", finish_reason=FinishReason.EOS)),
    ]:
        queues[index].put_nowait(delta)
        got.append(await streams.next())
    assert [(i, d.text) for i, d in got] == [(1, "b"), (0, "a"), (1, "c")]
    streams.close()


async def test_silence_gives_keepalives_then_the_delta():
    model, queue = FakeGenerator(), asyncio.Queue()
    streams = await ChoiceStreams.open(model, [queue])  # type: ignore[list-item]
    loop = asyncio.get_running_loop()
    start = loop.time()
    async with asyncio.timeout(5):  # generous: only a keep-alive that never comes fails it
        assert await streams.next(keepalive=0.05) is None
        assert await streams.next(keepalive=0.05) is None
    assert loop.time() - start >= 0.09  # each after its 50 ms of silence, not before
    loop.call_later(0.02, queue.put_nowait, Delta(text="x", finish_reason=FinishReason.STOP))
    item = await streams.next(keepalive=0.5)
    assert item is not None and item[1].text == "x"
    streams.close()


async def test_collect_gathers_each_choice_to_its_end():
    model, queues = FakeGenerator(), [asyncio.Queue(), asyncio.Queue()]
    streams = await ChoiceStreams.open(model, queues)  # type: ignore[arg-type]
    for q, text in zip(queues, "xy", strict=True):
        q.put_nowait(Delta(text=text))
        q.put_nowait(Delta(text=text, finish_reason=FinishReason.LENGTH))
    deltas = await streams.collect()
    assert [[d.text for d in ds] for ds in deltas] == [["x", "x"], ["y", "y"]]
    streams.close()
    assert model.left_early == []


async def test_close_leaves_every_unfinished_choice_early():
    model, queues = FakeGenerator(), [asyncio.Queue(), asyncio.Queue()]
    streams = await ChoiceStreams.open(model, queues)  # type: ignore[arg-type]
    queues[0].put_nowait(Delta(text="done", finish_reason=FinishReason.EOS))
    await streams.next()
    streams.close()
    await asyncio.sleep(0)  # cancellation reaches the readers on the next loop pass
    assert model.left_early == [id(queues[1])]


def test_keepalive_interval_from_the_environment(monkeypatch):
    monkeypatch.delenv(KEEPALIVE_ENV, raising=False)
    assert keepalive_interval() == DEFAULT_KEEPALIVE_S
    monkeypatch.setenv(KEEPALIVE_ENV, "0.25")
    assert keepalive_interval() == 0.25
    monkeypatch.setenv(KEEPALIVE_ENV, "0")
    assert keepalive_interval() is None


def test_sse_frames_one_json_object():
    assert sse({"a": 1}) == b'data: {"a":1}\n\n'
    assert orjson.loads(sse({"t": "é"})[6:-2]) == {"t": "é"}
