"""The GET stream route's SSE writer: keep-alive comments while a stream is silent."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from mlserver_streaming.openai.streaming import KEEPALIVE
from mlserver_streaming.text.stream_routes import with_keepalive


async def slow_lines() -> AsyncIterator[bytes]:
    yield b"id: 0\n\n"
    await asyncio.sleep(0.12)  # queued: nothing to send for a while
    yield b"id: 1\n\n"


async def test_a_silent_stream_gets_keep_alive_comments_and_loses_nothing() -> None:
    got = [line async for line in with_keepalive(slow_lines(), every=0.05)]
    assert got[0] == b"id: 0\n\n" and got[-1] == b"id: 1\n\n"
    assert 1 <= got.count(KEEPALIVE) <= 3 and len(got) == 2 + got.count(KEEPALIVE)


async def test_no_interval_passes_the_lines_through() -> None:
    assert [line async for line in with_keepalive(slow_lines(), every=None)] == [
        b"id: 0\n\n",
        b"id: 1\n\n",
    ]


async def test_leaving_early_cancels_the_pending_read() -> None:
    reading = with_keepalive(slow_lines(), every=0.05)
    assert await anext(reading) == b"id: 0\n\n"
    assert await anext(reading) == KEEPALIVE
    await reading.aclose()  # the client left while the next event was awaited
