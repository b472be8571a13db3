"""ChoiceStreams: n choices merged in arrival order, cancel on close."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from mlserver_streaming.events import FinishReason
from mlserver_streaming.openai.streaming import ChoiceStreams
from mlserver_streaming.text.sample.generation import Delta

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
