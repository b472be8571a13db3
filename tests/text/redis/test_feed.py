"""A worker's job feed against a real redis-server: which leases its heartbeat renews."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace

import pytest
from redis import Redis

from mlserver_streaming.text.redis.codec import GROUP, model_keys
from mlserver_streaming.text.redis.feed import JobFeed, Readers
from mlserver_streaming.text.settings import TextGenerationSettings
from tests.redis_server import RedisServer, running_redis


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with running_redis(tmp_path_factory.mktemp("redis")) as server:
        yield server


def idle_ms(redis: Redis, keys, message_id: bytes) -> int:
    (entry,) = redis.xpending_range(keys.jobs, GROUP, message_id, message_id, 1)
    return int(entry["time_since_delivered"])


def test_the_heartbeat_renews_the_jobs_held_and_lets_a_lost_read_run_out(redis_server):
    redis = Redis.from_url(redis_server.url)
    keys = model_keys("poet", None)
    redis.xgroup_create(keys.jobs, GROUP, id="0", mkstream=True)
    held, lost = redis.xadd(keys.jobs, {"job": "1"}), redis.xadd(keys.jobs, {"job": "2"})
    # Both delivered to w1 (pending for it); the reply with `lost` never reached the worker.
    redis.xreadgroup(GROUP, "w1", {keys.jobs: ">"}, count=2)
    feed = JobFeed(redis, keys, "w1", TextGenerationSettings())
    feed.jobs[0] = SimpleNamespace(message_id=held, lost=False)  # type: ignore[assignment]
    # Both have been idle a while: make it certain, then beat once.
    redis.xclaim(keys.jobs, GROUP, "w1", 0, [held, lost], idle=60_000, justid=True)
    Readers(feed)._heartbeat()
    assert idle_ms(redis, keys, held) < 60_000 <= idle_ms(redis, keys, lost)
    redis.close()
