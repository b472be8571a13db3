"""One shared XREAD for every reader: many streams and readers on one blocked connection."""

from __future__ import annotations

import asyncio

import pytest

from tests.text.redis.test_log import chunk, final, new_stream, read, redis, redis_server, tailer

__all__ = ["redis", "redis_server", "tailer"]  # fixtures, used by name

pytestmark = pytest.mark.timeout(60)


async def test_many_readers_of_many_streams_share_one_blocked_connection(redis, tailer):
    streams = [await new_stream(tailer) for _ in range(12)]
    late = streams[0]
    await late.append(chunk("x"))  # a second reader of this one starts from the start
    readers = [asyncio.ensure_future(read(s)) for s in streams]
    readers.append(asyncio.ensure_future(read(late)))
    await asyncio.sleep(0.2)  # all waiting now
    clients = [c for c in await redis.client_list() if c["cmd"] == "xread"]
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


async def test_a_new_reader_does_not_wait_for_the_blocked_read(tailer):
    idle = await new_stream(tailer)
    waiting = asyncio.ensure_future(read(idle))  # blocks the shared XREAD (1 s)
    await asyncio.sleep(0.1)
    busy = await new_stream(tailer)
    await busy.append(final("done"))
    started = asyncio.get_running_loop().time()
    assert await read(busy) == [(0, "done")]
    assert asyncio.get_running_loop().time() - started < 0.5
    await idle.append(final())
    assert await waiting == [(0, "")]
