"""Stream logs in Redis: one Redis Stream per text stream, read by any front end.

The `EventLog` of Redis mode. Workers write the entries (`worker.py`); a front end reads
them from the entry after the client's last event (through `redis/tail.py`'s one shared
XREAD), so any front end serves any resume. While it waits it also watches the stream's
deadline: past it (plus a lease, the time a live worker takes to end it itself) the
reader writes the final
`timeout` entry, so a stream whose worker died with no one to reclaim it still ends.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from redis.exceptions import RedisError, ResponseError

from ...errors import RedisUnavailable, StreamNotFound, client_message
from ..streams.event_log import LogEntry, check_starting_after
from .codec import (
    RedisKeys,
    StreamMeta,
    entry_fields,
    entry_from_fields,
    event_id,
    event_index,
    timeout_entry,
)
from .tail import RedisTailer


def unavailable(err: RedisError) -> RedisUnavailable:
    """The retryable error of a Redis call that failed."""
    return RedisUnavailable(client_message(err, "redis unavailable, retry later"))


class RedisStreamLog:
    """One stream's log in Redis; `length` and `ended` are as of the last read."""

    def __init__(
        self,
        tailer: RedisTailer,
        keys: RedisKeys,
        stream_id: str,
        meta: StreamMeta,
        length: int = 0,
        ended: bool = False,
        grace_s: float = 10.0,
    ) -> None:
        self.tailer = tailer
        self.redis = tailer.redis
        self.keys = keys
        self.stream_id = stream_id
        self.meta = meta
        self.length = length
        self.ended = ended
        self.grace_s = grace_s
        self.poll_s = max(0.1, grace_s / 4)
        """How long a reader waits for an entry before it looks at the deadline again."""

    @property
    def logprobs(self) -> int | None:
        return self.meta.logprobs

    async def append(self, entry: LogEntry) -> int:
        """Add the next entry (front ends only append a timeout); its event_index, or -1
        when another writer took that index first (the reader then reads theirs)."""
        index = self.length
        try:
            await self.redis.xadd(
                self.keys.events(self.stream_id), entry_fields(entry), id=event_id(index)
            )
        except ResponseError:  # an entry at or past this index exists already
            return -1
        except RedisError as err:
            raise unavailable(err) from err
        self.length, self.ended = index + 1, entry.final
        return index

    def entries(self, after: int) -> AsyncIterator[tuple[int, LogEntry]]:
        """Replay after `after`, then tail (InvalidParameter at once for a bad index)."""
        check_starting_after(self, after)
        return self._tail(after)

    async def _tail(self, after: int) -> AsyncIterator[tuple[int, LogEntry]]:
        index = after + 1
        sub = await self.tailer.subscribe(self.keys.events(self.stream_id), event_id(after))
        try:
            while True:
                try:
                    async with asyncio.timeout(self.poll_s):
                        got = await sub.queue.get()
                except TimeoutError:
                    if time.time() > self.meta.deadline + self.grace_s:
                        await self._time_out()
                    continue
                if isinstance(got, RedisError):
                    raise unavailable(got)
                for raw_id, fields in got:
                    if event_index(raw_id) != index:
                        raise StreamNotFound(
                            f"events {index}..{event_index(raw_id) - 1} of stream "
                            f"{self.stream_id!r} are no longer kept (resume_max_events); "
                            f"got starting_after={after}."
                        )
                    entry = entry_from_fields(fields)
                    self.length, self.ended = index + 1, entry.final
                    yield index, entry
                    if entry.final:
                        return
                    index += 1
        finally:
            self.tailer.unsubscribe(sub)

    async def _time_out(self) -> None:
        """End a stream past its deadline that no worker ended (usage counted from the log)."""
        try:
            logged: Any = await self.redis.xrange(self.keys.events(self.stream_id))
        except RedisError as err:
            raise unavailable(err) from err
        entries = [entry_from_fields(fields) for _, fields in logged]
        if entries and entries[-1].final:
            return  # written meanwhile: the next read gets it
        self.length = len(logged) and event_index(logged[-1][0]) + 1
        usage = self.meta.usage(sum(len(e.delta.token_ids) for e in entries))
        await self.append(timeout_entry(usage, self.meta.deadline, time.time()))


class RedisEventLog:
    """The stream logs of one model in Redis (`EventLog`)."""

    def __init__(self, tailer: RedisTailer, keys: RedisKeys, grace_s: float) -> None:
        self.tailer = tailer
        self.redis = tailer.redis
        self.keys = keys
        self.grace_s = grace_s

    async def get(self, stream_id: str) -> RedisStreamLog:
        """The log of a stream that is live or still retained (else StreamNotFound)."""
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.get(self.keys.meta(stream_id))
                pipe.xrevrange(self.keys.events(stream_id), count=1)
                raw, last = await pipe.execute()
        except RedisError as err:
            raise unavailable(err) from err
        if raw is None:
            raise StreamNotFound(
                f"stream {stream_id!r} not found: no such stream id, or it ended more than "
                "resume_retention_s ago."
            )
        length, ended = 0, False
        if last:
            length, ended = event_index(last[0][0]) + 1, entry_from_fields(last[0][1]).final
        meta = StreamMeta.decode(raw)
        return RedisStreamLog(self.tailer, self.keys, stream_id, meta, length, ended, self.grace_s)
