"""Redis mode's front end: jobs to the generation workers, streams read from their logs.

The server holds no generation state: a request becomes a job XADDed to the model's job
stream (read by the workers' consumer group, `worker.py`) and the stream's events are
read from its log in Redis (`redis/log.py`), so any front end serves any stream. Unary
and OpenAI requests run the same way, on a stream of their own whose log a task reads.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
import uuid

from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from ...errors import InvalidParameter, StreamNotFound
from ...events import FinishReason, error_message
from ..record import RequestRecord
from ..request import TextRequest
from ..sample.generation import Delta
from ..settings import TextGenerationSettings, check_capacity
from .codec import (
    GROUP,
    REDIS_URL_ENV,
    Job,
    Lifetimes,
    RedisKeys,
    StreamMeta,
    model_keys,
)
from .log import RedisEventLog, RedisStreamLog, unavailable
from .tail import RedisTailer

logger = logging.getLogger(__name__)

TAIL_BLOCK_MS = 1000
"""How long the shared XREAD blocks (a new reader wakes it at once)."""
CONTROL_MAXLEN = 10_000
"""Cancels kept in the control stream (workers read only new ones)."""


def redis_url(settings: TextGenerationSettings) -> str | None:
    """The model's Redis URL: its setting, else MLSERVER_STREAMING_REDIS_URL, else None."""
    return settings.redis_url or os.environ.get(REDIS_URL_ENV) or None


class RedisBackend:
    """Generation on the workers behind one Redis (`streams.Backend`)."""

    def __init__(self, redis: Redis, keys: RedisKeys, settings: TextGenerationSettings):
        self.redis = redis
        self.keys = keys
        self.settings = settings
        self.lifetimes = Lifetimes.of(settings)
        self.tailer = RedisTailer(redis, TAIL_BLOCK_MS)
        self.log = RedisEventLog(self.tailer, keys, settings.redis_lease_s)
        self._ids = itertools.count()
        self._tasks: set[asyncio.Task[None]] = set()

    @classmethod
    def connect(
        cls, url: str, settings: TextGenerationSettings, name: str, version: str | None
    ) -> RedisBackend:
        """A backend on `url`; connections are made (and remade) as calls need them, so a
        Redis that is down at load or restarts later only fails the calls meanwhile."""
        return cls(Redis.from_url(url), model_keys(name, version), settings)

    async def start(self, stream_id: str, request: TextRequest) -> RedisStreamLog:
        """Claim the stream id and queue its job (ServerAtCapacity past max_waiting)."""
        deadline = time.time() + self.settings.request_timeout_s
        job = Job(stream_id, request.prompt_ids, request.params, deadline)
        meta = StreamMeta.of(job)
        try:
            await self._check_capacity()
            await self._claim(stream_id, meta)
            await self.redis.xadd(self.keys.jobs, job.fields())
        except RedisError as err:
            raise unavailable(err) from err
        return RedisStreamLog(
            self.tailer, self.keys, stream_id, meta, grace_s=self.settings.redis_lease_s
        )

    async def submit(self, request: TextRequest) -> RequestRecord:
        """A generation on a stream of its own; a task moves its log's deltas to the record."""
        stream_id = f"req-{uuid.uuid4().hex}"
        stream = await self.start(stream_id, request)
        record = RequestRecord(next(self._ids), len(request.prompt_ids), request.params.seed)
        record.stream_id = stream_id
        self._spawn(self._pump(stream, record))
        return record

    def cancel_record(self, record: RequestRecord) -> None:
        if record.finish_reason is None:
            self.cancel(record.stream_id)

    def cancel(self, stream_id: str) -> None:
        """Tell the workers (the job's owner acts); also noted for a worker that claims the
        job later. Sent by a task: a disconnect's cleanup cannot wait on Redis."""
        self._spawn(self._cancel(stream_id))

    async def stop(self) -> None:
        """Stop reading; the workers go on with background streams."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.tailer.stop()
        await self.redis.aclose()

    async def _check_capacity(self) -> None:
        """The capacity rule on the jobs queued that no worker has taken yet (a worker
        takes a job only into a free slot of its own, so these are the waiting ones)."""
        try:
            groups = await self.redis.xinfo_groups(self.keys.jobs)
        except ResponseError:  # no job stream yet: nothing queued
            return
        group = next((g for g in groups if g["name"] in (GROUP, GROUP.encode())), None)
        if group is not None and group.get("lag") is not None:
            queued = int(group["lag"])
        else:  # no worker ever joined, or Redis cannot tell the lag: count what is there
            pending = 0 if group is None else int(group["pending"])
            queued = int(await self.redis.xlen(self.keys.jobs)) - pending
        check_capacity(queued, self.settings.max_waiting, self.settings.max_running)

    async def _claim(self, stream_id: str, meta: StreamMeta) -> None:
        """Make the stream id ours, replacing an ended stream of that id (InvalidParameter
        while one is live). Its keys expire if nothing ever ends it."""
        ttl = self.lifetimes.stream
        meta_key = self.keys.meta(stream_id)
        if await self.redis.set(meta_key, meta.encode(), nx=True, ex=ttl):
            return
        try:
            existing = await self.log.get(stream_id)
        except StreamNotFound:  # expired meanwhile
            existing = None
        if existing is not None and not existing.ended:
            raise InvalidParameter(
                f"stream id {stream_id!r} is already live: resume it (resume: {stream_id!r}) "
                "or send the new request with another id."
            )
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(self.keys.events(stream_id), self.keys.cancelled(stream_id))
            pipe.set(meta_key, meta.encode(), ex=ttl)
            await pipe.execute()

    async def _cancel(self, stream_id: str) -> None:
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.set(self.keys.cancelled(stream_id), 1, ex=self.lifetimes.job)
                pipe.xadd(
                    self.keys.control,
                    {"cancel": stream_id},
                    maxlen=CONTROL_MAXLEN,
                    approximate=True,
                )
                await pipe.execute()
        except RedisError:
            logger.exception("could not send the cancel of stream %r", stream_id)

    async def _pump(self, stream: RedisStreamLog, record: RequestRecord) -> None:
        """The log's deltas to the record; a failure is its last delta (retryable if Redis)."""
        try:
            async for _, entry in stream.entries(-1):
                self._deliver(record, entry.delta)
        except Exception as err:  # noqa: BLE001 - the reader must get a final delta
            failed = Delta(finish_reason=FinishReason.ERROR, error=error_message(err))
            failed.retryable = bool(getattr(err, "retryable", False))
            self._deliver(record, failed)
        except asyncio.CancelledError:  # stopping: the workers go on, this reader does not
            if record.finish_reason is None:
                self._deliver(record, Delta(finish_reason=FinishReason.CANCELLED))
            raise

    @staticmethod
    def _deliver(record: RequestRecord, delta: Delta) -> None:
        record.account(delta)
        record.deltas.put_nowait(delta)

    def _spawn(self, coroutine) -> None:  # type: ignore[no-untyped-def]
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
