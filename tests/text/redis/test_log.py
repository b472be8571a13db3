"""Stream logs in a real redis-server: replay then tail, one writer per index, trimming,
the front end's deadline, and Redis going away."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from redis.asyncio import Redis

from mlserver_streaming.errors import InvalidParameter, RedisUnavailable, StreamNotFound
from mlserver_streaming.events import FinishReason
from mlserver_streaming.text.redis.codec import RedisKeys, StreamMeta
from mlserver_streaming.text.redis.log import RedisEventLog, RedisStreamLog
from mlserver_streaming.text.redis.tail import RedisTailer
from mlserver_streaming.text.sample.generation import Delta
from mlserver_streaming.text.streams.event_log import LogEntry
from tests.redis_server import RedisServer, running_redis

pytestmark = pytest.mark.timeout(60)

KEYS = RedisKeys("test")


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with running_redis(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
async def redis(redis_server) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


@pytest.fixture
async def tailer(redis) -> AsyncIterator[RedisTailer]:
    shared = RedisTailer(redis, block_ms=1000)
    yield shared
    await shared.stop()


async def new_stream(
    tailer: RedisTailer, deadline: float = 1e12, grace_s: float = 1.0
) -> RedisStreamLog:
    stream_id = uuid.uuid4().hex
    meta = StreamMeta(None, deadline, 4, 7)
    await tailer.redis.set(KEYS.meta(stream_id), meta.encode())
    return RedisStreamLog(tailer, KEYS, stream_id, meta, grace_s=grace_s)


def chunk(text: str) -> LogEntry:
    return LogEntry(Delta(text, [len(text)]))


def final(text: str = "") -> LogEntry:
    return LogEntry(Delta(text, [1], finish_reason=FinishReason.LENGTH), {"completion_tokens": 9})


async def tailing(tailer: RedisTailer, *streams: RedisStreamLog) -> None:
    """Wait until the tailer's XREAD in flight reads every one of `streams`."""
    keys = {KEYS.events(stream.stream_id) for stream in streams}
    async with asyncio.timeout(30):
        while not keys <= set(tailer._reading):
            await asyncio.sleep(0.005)


async def read(stream: RedisStreamLog, after: int = -1) -> list[tuple[int, str]]:
    return [(i, entry.delta.text) async for i, entry in stream.entries(after)]


async def test_a_reader_replays_then_tails_entries_written_meanwhile(redis, tailer):
    stream = await new_stream(tailer)
    assert [await stream.append(chunk(t)) for t in "ab"] == [0, 1]
    reader = asyncio.ensure_future(read(stream, 0))
    await tailing(tailer, stream)  # replayed "b", now tails
    writer = await RedisEventLog(tailer, KEYS, 1.0).get(stream.stream_id)
    assert (writer.length, writer.ended) == (2, False)
    await writer.append(chunk("c"))
    await writer.append(final("!"))
    assert await reader == [(1, "b"), (2, "c"), (3, "!")]
    again = await RedisEventLog(tailer, KEYS, 1.0).get(stream.stream_id)
    assert (again.length, again.ended) == (4, True)
    with pytest.raises(InvalidParameter, match=r"starting_after must be in \[-1, 2\]"):
        again.entries(3)


async def test_an_index_is_written_once_whoever_writes_it(redis, tailer):
    stream = await new_stream(tailer)
    other = await RedisEventLog(tailer, KEYS, 1.0).get(stream.stream_id)
    assert await stream.append(chunk("mine")) == 0
    assert await other.append(chunk("late")) == -1  # the slower writer loses
    await stream.append(final())
    assert await read(other) == [(0, "mine"), (1, "")]


async def test_an_unknown_id_and_trimmed_events_are_not_found(redis, tailer):
    with pytest.raises(StreamNotFound, match="stream 'nope' not found"):
        await RedisEventLog(tailer, KEYS, 1.0).get("nope")
    stream = await new_stream(tailer)
    for text in "abc":
        await stream.append(chunk(text))
    await redis.xtrim(KEYS.events(stream.stream_id), maxlen=1, approximate=False)
    with pytest.raises(StreamNotFound, match="events 0..1 .* no longer kept"):
        await read(stream)


async def test_past_its_deadline_a_reader_ends_the_stream_with_its_usage(redis, tailer):
    stream = await new_stream(tailer, deadline=time.time(), grace_s=1.0)
    await stream.append(chunk("ab"))
    async with asyncio.timeout(30):  # generous: the reader looks again every second
        events = [entry async for _, entry in stream.entries(-1)]
    last = events[-1]
    assert last.delta.finish_reason is FinishReason.TIMEOUT and "deadline" in last.delta.error
    # Not before the grace: when it ended the stream the reader was >= 1 s past the deadline
    # (its own clock, in the message; how long this machine took to get here does not count).
    late = re.search(r"\(([0-9.]+) s past it\)", last.delta.error)
    assert late is not None and float(late.group(1)) >= 1.0, last.delta.error
    assert last.final_params["completion_tokens"] == 1 and last.final_params["prompt_tokens"] == 4


async def test_redis_going_away_is_a_retryable_error_not_a_hang(tmp_path):
    with running_redis(tmp_path) as server:
        client = Redis.from_url(server.url)
        tailer = RedisTailer(client, block_ms=1000)
        stream = await new_stream(tailer)
        reader = asyncio.ensure_future(read(stream))
        await tailing(tailer, stream)  # the reader waits on the shared XREAD
        server.stop()
        with pytest.raises(RedisUnavailable, match="redis unavailable") as info:
            await asyncio.wait_for(reader, 30)
        assert info.value.retryable and info.value.status_code == 503
        with pytest.raises(RedisUnavailable):
            await RedisEventLog(tailer, KEYS, 1.0).get(stream.stream_id)
        await tailer.stop()
        await client.aclose()
