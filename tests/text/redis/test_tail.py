"""One shared XREAD for every reader: many streams and readers on one blocked connection."""

from __future__ import annotations

import asyncio

import pytest

from mlserver_streaming.text.redis.tail import RedisTailer
from tests.text.redis.test_log import (
    chunk,
    final,
    new_stream,
    read,
    redis,
    redis_server,
    tailer,
    tailing,
)

__all__ = ["redis", "redis_server", "tailer"]  # fixtures, used by name

pytestmark = pytest.mark.timeout(60)


async def test_many_readers_of_many_streams_share_one_blocked_connection(redis, tailer):
    streams = [await new_stream(tailer) for _ in range(12)]
    late = streams[0]
    await late.append(chunk("x"))  # a second reader of this one starts from the start
    readers = [asyncio.ensure_future(read(s)) for s in streams]
    readers.append(asyncio.ensure_future(read(late)))
    await tailing(tailer, *streams)  # all 13 subscribed: the read in flight covers them
    async with asyncio.timeout(30):  # and it has reached Redis
        while not (clients := [c for c in await redis.client_list() if c["cmd"] == "xread"]):
            await asyncio.sleep(0.005)
    assert sum(map(len, tailer._subs.values())) == 13
    assert len(clients) == 1  # one XREAD for 13 readers of 12 streams
    for step in range(3):
        for i, stream in enumerate(streams):
            await stream.append(chunk(f"{i}.{step}"))
    for stream in streams:
        await stream.append(final())
    results = await asyncio.gather(*readers)
    for i, events in enumerate(results[:-1]):
        texts = [text for _, text in events]
        assert texts == (["x"] if i == 0 else []) + [f"{i}.{s}" for s in range(3)] + [""]
    assert results[-1] == results[0]


async def test_a_new_reader_does_not_wait_for_the_blocked_read(redis):
    # The shared XREAD blocks for a minute: a reader that waited for it would hit the
    # 30 s bound below, one that does not returns at once, however slow the machine.
    tailer = RedisTailer(redis, block_ms=60_000)
    try:
        idle = await new_stream(tailer)
        waiting = asyncio.ensure_future(read(idle))
        await tailing(tailer, idle)  # the blocked read is in flight
        busy = await new_stream(tailer)
        await busy.append(chunk("go"))
        async with asyncio.timeout(30):
            reading = asyncio.ensure_future(read(busy))
            await tailing(tailer, idle, busy)  # it joined the read without waiting it out
            await busy.append(final("done"))
            assert await reading == [(0, "go"), (1, "done")]
        await idle.append(final())
        assert await asyncio.wait_for(waiting, 30) == [(0, "")]
    finally:
        await tailer.stop()
