"""SSE framing and keep-alives: comments while a source is silent, nothing lost, cleanup."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import orjson
import pytest

from mlserver_streaming.sse import (
    DEFAULT_KEEPALIVE_S,
    KEEPALIVE,
    KEEPALIVE_ENV,
    READ_AHEAD,
    data_event,
    id_event,
    keepalive_interval,
    with_keepalive,
)

pytestmark = pytest.mark.timeout(30)

EVERY = 0.01
"""A short interval: the tests wait on what arrives, never on how long it took."""


class Source:
    """Lines the test releases one at a time; notes when the reader closed it."""

    def __init__(self) -> None:
        self.lines: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.closed = asyncio.Event()

    async def read(self) -> AsyncIterator[bytes]:
        try:
            while (line := await self.lines.get()) is not None:
                yield line
        finally:
            self.closed.set()


async def test_a_silent_source_gets_keepalives_and_loses_nothing() -> None:
    source = Source()
    reading = with_keepalive(source.read(), every=EVERY)
    source.lines.put_nowait(b"id: 0\n\n")
    assert await anext(reading) == b"id: 0\n\n"
    # Nothing released: only keep-alives can come, as many as the reader waits for.
    assert [await anext(reading) for _ in range(3)] == [KEEPALIVE] * 3
    source.lines.put_nowait(b"id: 1\n\n")
    source.lines.put_nowait(None)
    rest = [line async for line in reading]
    assert [line for line in rest if line != KEEPALIVE] == [b"id: 1\n\n"]


async def test_no_interval_passes_the_lines_through() -> None:
    source = Source()
    for line in (b"a\n\n", b"b\n\n", None):
        source.lines.put_nowait(line)
    assert [line async for line in with_keepalive(source.read(), every=None)] == [
        b"a\n\n",
        b"b\n\n",
    ]


async def test_leaving_early_closes_the_source() -> None:
    source = Source()
    reading = with_keepalive(source.read(), every=EVERY)
    assert await anext(reading) == KEEPALIVE
    await reading.aclose()  # the client left while the next line was awaited
    await asyncio.wait_for(source.closed.wait(), timeout=10)


async def test_an_error_in_the_source_reaches_the_writer() -> None:
    async def failing() -> AsyncIterator[bytes]:
        yield b"a\n\n"
        raise RuntimeError("log gone")

    reading = with_keepalive(failing(), every=EVERY)
    assert await anext(reading) == b"a\n\n"
    with pytest.raises(RuntimeError, match="log gone"):
        async for line in reading:
            assert line == KEEPALIVE


def test_keepalive_interval_from_the_environment(monkeypatch):
    monkeypatch.delenv(KEEPALIVE_ENV, raising=False)
    assert keepalive_interval() == DEFAULT_KEEPALIVE_S
    monkeypatch.setenv(KEEPALIVE_ENV, "0.25")
    assert keepalive_interval() == 0.25
    monkeypatch.setenv(KEEPALIVE_ENV, "0")
    assert keepalive_interval() is None
    monkeypatch.setenv(KEEPALIVE_ENV, "soon")
    assert keepalive_interval() == DEFAULT_KEEPALIVE_S


def test_events_frame_one_json_object_and_an_id():
    assert data_event({"a": 1}) == b'data: {"a":1}\n\n'
    assert orjson.loads(data_event({"t": "é"})[6:-2]) == {"t": "é"}
    assert id_event(7, b"{}") == b"id: 7\ndata: {}\n\n"


async def test_a_reader_held_on_a_full_queue_still_closes_the_source() -> None:
    source = Source()
    reading = with_keepalive(source.read(), every=EVERY)
    for i in range(READ_AHEAD + 2):  # one read, READ_AHEAD queued, one held by the reader
        source.lines.put_nowait(b"%d\n\n" % i)
    assert await anext(reading) == b"0\n\n"
    # The queue is full and the reader holds the next line: the client leaves now.
    while not source.lines.empty():
        await asyncio.sleep(0)
    await reading.aclose()
    await asyncio.wait_for(source.closed.wait(), timeout=10)
