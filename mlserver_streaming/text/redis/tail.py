"""One blocking XREAD for every stream a front end reads (Redis mode).

Each reader of a stream log subscribes here instead of blocking a Redis connection of its
own: one task XREADs all subscribed streams at once, each from the earliest entry any of
its readers still waits for, and hands each reader its entries. Under load that is one
round trip per engine step for all streams instead of one per event per stream, and a front
end holds one blocked connection however many clients it streams to. A new subscriber
wakes the blocked read (CLIENT UNBLOCK), so it does not wait for the poll interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)

READ_BATCH = 256
"""Entries one XREAD returns at most per stream (a reader behind catches up in batches)."""
RETRY_S = 0.5


@dataclass(eq=False)
class Subscription:
    """One reader's place in one stream; its entries (or a RedisError) arrive in `queue`."""

    key: str
    last_id: str
    """The id of the last entry this reader has."""
    queue: asyncio.Queue[list[tuple[Any, Any]] | RedisError] = field(default_factory=asyncio.Queue)


def _order(entry_id: Any) -> tuple[int, int]:
    raw = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, _, seq = raw.partition("-")
    return int(ms), int(seq)


def _after(entry_id: Any, last_id: str) -> bool:
    """Whether a Redis Stream entry id comes after `last_id`."""
    return _order(entry_id) > _order(last_id)


def _earliest(ids: Iterable[str]) -> str:
    return min(ids, key=_order)


class RedisTailer:
    """The front end's one reader of every stream log it tails."""

    def __init__(self, redis: Redis, block_ms: int) -> None:
        self.redis = redis
        self.block_ms = block_ms
        self._subs: dict[str, set[Subscription]] = {}
        self._reading: dict[str, str] = {}
        """The streams of the XREAD in flight, and the id each is read after."""
        self._client_id: int | None = None
        self._task: asyncio.Task[None] | None = None

    async def subscribe(self, key: str, last_id: str) -> Subscription:
        """Start tailing `key` after `last_id`; returns once the shared read includes it."""
        sub = Subscription(key, last_id)
        self._subs.setdefault(key, set()).add(sub)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._loop())
        while not self._covers(sub) and sub in self._subs.get(key, ()):
            if self._client_id is not None:
                with contextlib.suppress(RedisError):  # the loop reports Redis errors
                    await self.redis.client_unblock(self._client_id)
            await asyncio.sleep(0.001)
        return sub

    def _covers(self, sub: Subscription) -> bool:
        """Whether the XREAD in flight reads the subscriber's stream from its place."""
        read_after = self._reading.get(sub.key)
        return read_after is not None and not _after(sub.last_id, read_after)

    def unsubscribe(self, sub: Subscription) -> None:
        subs = self._subs.get(sub.key)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._subs[sub.key]

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        """XREAD every subscribed stream until none is left; a failure goes to every reader."""
        connection = self.redis.client()  # one connection, so CLIENT UNBLOCK can find it
        try:
            while self._subs:
                try:
                    if self._client_id is None:
                        self._client_id = await connection.client_id()
                    await self._read_once(connection)
                except RedisError as err:
                    self._client_id = None
                    for subs in list(self._subs.values()):
                        for sub in subs:
                            sub.queue.put_nowait(err)
                    self._subs.clear()
                    await asyncio.sleep(RETRY_S)
        finally:
            self._reading = {}
            self._client_id = None
            await connection.aclose()

    async def _read_once(self, connection: Redis) -> None:
        streams = {key: _earliest(s.last_id for s in subs) for key, subs in self._subs.items()}
        self._reading = streams
        try:
            wanted: Any = streams  # redis-py's key type is a union no str dict matches
            reply: Any = await connection.xread(wanted, count=READ_BATCH, block=self.block_ms)
        finally:
            self._reading = {}
        for raw_key, entries in reply or ():
            key = raw_key.decode() if isinstance(raw_key, bytes) else raw_key
            for sub in list(self._subs.get(key, ())):
                new = [entry for entry in entries if _after(entry[0], sub.last_id)]
                if new:
                    sub.last_id = new[-1][0].decode()
                    sub.queue.put_nowait(new)
