"""A worker's inbox in Redis mode: jobs from the consumer group, cancels from the control
stream, turned into engine commands (`engine_core.Inbox`).

Two threads block on Redis so the engine loop never does: one reads jobs (new ones, and
those of dead workers: XAUTOCLAIM of entries whose lease ran out) only while the engine
has room, and renews the lease of this worker's jobs with a heartbeat; the other reads
cancels. A job whose stream already has events continues from them: its logged tokens
are replayed (`Submit.replay`) and its next event gets the next index.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from redis import Redis
from redis.exceptions import RedisError, ResponseError

from ..core.engine_core import QueueInbox
from ..core.messages import Cancel, Command, Stop, Submit
from ..drivers.metrics import RequestTiming
from ..settings import TextGenerationSettings
from .codec import (
    GROUP,
    Job,
    JobUsage,
    Lifetimes,
    RedisKeys,
    entry_fields,
    entry_from_fields,
    event_id,
    event_index,
    timeout_entry,
)

logger = logging.getLogger(__name__)

RETRY_S = 1.0
"""Pause before trying Redis again after a failed call (redis-py reconnects by itself)."""


@dataclass(eq=False)
class ActiveJob:
    """A job this worker generates: where its events go and what its final event says."""

    message_id: bytes
    job: Job
    next_index: int
    usage: JobUsage
    timing: RequestTiming
    lost: bool = False
    """Another worker took the job over (this one was thought dead): stop writing."""


class JobFeed:
    """Jobs and cancels from Redis as commands; the jobs this worker holds, by request id."""

    def __init__(
        self,
        redis: Redis,
        keys: RedisKeys,
        consumer: str,
        settings: TextGenerationSettings,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.consumer = consumer
        self.capacity = settings.max_running
        self.lease_s = settings.redis_lease_s
        self.timeout_s = settings.request_timeout_s
        self.owner_ttl_s = Lifetimes.of(settings).job
        self.jobs: dict[int, ActiveJob] = {}
        self._by_stream: dict[str, int] = {}
        self._ids = itertools.count()
        self._commands = QueueInbox()
        self.room = threading.Condition()
        """Notified when a job ends (room for another) and at stop."""
        self._readers = Readers(self)

    def join(self) -> None:
        """Join the model's consumer group and start reading."""
        self._readers.start()

    def cancel_stream(self, stream_id: str) -> None:
        """A front end cancelled a stream: cancel its job if this worker holds it."""
        request_id = self._by_stream.get(stream_id)
        if request_id is not None:
            self._commands.put(Cancel(request_id))

    def receive(self, block: bool) -> list[Command]:
        """The commands waiting (at least one if `block`)."""
        return self._commands.receive(block)

    def finished(self, request_id: int) -> None:
        """A job ended (its final event is written): make room for another."""
        with self.room:
            active = self.jobs.pop(request_id, None)
            if active is not None:
                self._by_stream.pop(active.job.stream_id, None)
            self.room.notify_all()

    def lose(self, request_id: int, ack: bool) -> None:
        """Stop a job this worker may no longer write: another worker took it over (it acks
        it) or its stream was ended meanwhile (a front end's timeout: `ack` it here)."""
        active = self.jobs.get(request_id)
        if active is not None and not active.lost:
            logger.warning("job of stream %r was taken over; dropping it", active.job.stream_id)
            active.lost = True
            self._commands.put(Cancel(request_id))
            if ack:
                self._ack(active.message_id)

    def stop(self) -> None:
        """Stop reading and hand this worker's jobs back at once: their lease is marked run
        out, so another worker claims them now and continues them."""
        self._readers.stopping.set()
        with self.room:
            self.room.notify_all()
        ids: list[Any] = [a.message_id for a in list(self.jobs.values()) if not a.lost]
        if ids:
            idle_ms = int(self.lease_s * 1000) + 1
            try:
                self.redis.xclaim(
                    self.keys.jobs, GROUP, self.consumer, 0, ids, idle=idle_ms, justid=True
                )
            except RedisError:
                logger.exception("could not hand the jobs back; they go after the lease")
        self._commands.put(Stop())

    def take_all(self, messages: list) -> None:
        """Start the jobs of these job-stream entries (new, or reclaimed from a dead worker)."""
        owned = {a.message_id for a in list(self.jobs.values())}
        for message_id, fields in messages:
            if fields is None or message_id in owned:  # deleted meanwhile, or ours already
                continue
            try:
                job = Job.from_fields(fields)
            except (KeyError, TypeError, ValueError):  # not a job of ours: never retried
                logger.exception("dropping malformed job %r", message_id)
                self._ack(message_id)
                continue
            self._take(message_id, job)

    def _take(self, message_id: bytes, job: Job) -> None:
        """Start a job, continuing from any events its stream has (a reclaimed job). Owner
        first, log second: a paused worker's event is either in the log read here or
        refused."""
        self.redis.set(self.keys.owner(job.stream_id), self.consumer, ex=self.owner_ttl_s)
        events: Any = self.redis.xrange(self.keys.events(job.stream_id))
        logged = [entry_from_fields(fields) for _, fields in events]
        replay = [token for entry in logged for token in entry.delta.token_ids]
        usage = JobUsage(len(job.prompt_ids), job.params.seed, len(replay))
        if logged and logged[-1].final:  # ended; the worker died before its XACK
            self._ack(message_id)
            return
        next_index = event_index(events[-1][0]) + 1 if events else 0
        remaining = job.deadline - time.time()
        if remaining <= 0:  # it waited past its deadline (no worker had room, or all died)
            entry = timeout_entry(usage, job.deadline, time.time())
            with contextlib.suppress(ResponseError):  # someone ended it meanwhile
                key = self.keys.events(job.stream_id)
                self.redis.xadd(key, entry_fields(entry), id=event_id(next_index))
            self._ack(message_id)
            return
        request_id = next(self._ids)
        now = time.monotonic()
        # Arrival at the front end (deadline minus timeout): queue time and TTFT include
        # the wait in Redis. A reclaimed job's first token is not its first.
        arrival = now + remaining - self.timeout_s
        timing = RequestTiming(arrival, last_token_at=now if replay else None)
        with self.room:
            self.jobs[request_id] = ActiveJob(message_id, job, next_index, usage, timing)
            self._by_stream[job.stream_id] = request_id
        self._commands.put(
            Submit(request_id, job.prompt_ids, job.params, arrival, now + remaining, tuple(replay))
        )
        if self.redis.exists(self.keys.cancelled(job.stream_id)):
            self._commands.put(Cancel(request_id))

    def _ack(self, message_id: bytes) -> None:
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.xack(self.keys.jobs, GROUP, message_id)
            pipe.xdel(self.keys.jobs, message_id)
            pipe.execute()


class Readers:
    """The two threads that block on Redis for a feed, so the engine loop never does: jobs
    (and the lease heartbeat), and cancels. Each outlives any Redis failure."""

    def __init__(self, feed: JobFeed) -> None:
        self.feed = feed
        self.redis, self.keys, self.consumer = feed.redis, feed.keys, feed.consumer
        self.stopping = threading.Event()
        self._threads = [
            threading.Thread(target=self._guard(self._read_jobs), name="jobs", daemon=True),
            threading.Thread(target=self._guard(self._read_cancels), name="cancels", daemon=True),
        ]

    def start(self) -> None:
        """Create the consumer group if need be, then start both threads."""
        self._create_group()
        for thread in self._threads:
            thread.start()

    def _create_group(self) -> None:
        """The group, created with its stream from the first job ever queued, by the first
        worker (and again after a Redis restart lost it)."""
        try:
            self.redis.xgroup_create(self.keys.jobs, GROUP, id="0", mkstream=True)
        except ResponseError as err:
            if "BUSYGROUP" not in str(err):
                raise

    def _guard(self, loop):  # type: ignore[no-untyped-def]
        def run() -> None:
            while not self.stopping.is_set():
                try:
                    loop()
                except Exception as err:  # noqa: BLE001 - the reader must outlive any failure
                    if "NOGROUP" in str(err):
                        logger.warning("redis lost the consumer group (restarted?): recreating")
                        with contextlib.suppress(RedisError):
                            self._create_group()
                        continue
                    logger.warning("redis: %r; retrying in %.0f s", err, RETRY_S)
                    time.sleep(RETRY_S)

        return run

    def _read_jobs(self) -> None:
        beat = self.feed.lease_s / 3
        last_beat = last_claim = 0.0
        while not self.stopping.is_set():
            now = time.monotonic()
            if now - last_beat >= beat:
                self._heartbeat()
                last_beat = now
            free = self.feed.capacity - len(self.feed.jobs)
            if free <= 0:
                with self.feed.room:
                    self.feed.room.wait(timeout=beat)
                continue
            if now - last_claim >= self.feed.lease_s / 2:
                reclaimed: Any = self.redis.xautoclaim(
                    self.keys.jobs, GROUP, self.consumer, int(self.feed.lease_s * 1000), count=free
                )
                last_claim = now
                self.feed.take_all(reclaimed[1])
                free = self.feed.capacity - len(self.feed.jobs)
                if free <= 0:
                    continue
            reply: Any = self.redis.xreadgroup(
                GROUP, self.consumer, {self.keys.jobs: ">"}, count=free, block=int(beat * 1000)
            )
            for _, messages in reply or ():
                self.feed.take_all(messages)

    def _heartbeat(self) -> None:
        """Renew the lease of the jobs this worker runs (XCLAIM resets their idle time).
        Only those: an entry pending for it that it never took (the reply of its read was
        lost) must run out, so that XAUTOCLAIM hands it to a worker that runs it."""
        ids: list[Any] = [a.message_id for a in list(self.feed.jobs.values()) if not a.lost]
        if ids:
            self.redis.xclaim(self.keys.jobs, GROUP, self.consumer, 0, ids, justid=True)

    def _read_cancels(self) -> None:
        last = "$"
        while not self.stopping.is_set():
            reply: Any = self.redis.xread({self.keys.control: last}, block=1000)
            for _, messages in reply or ():
                for message_id, fields in messages:
                    last = message_id
                    self.feed.cancel_stream(fields[b"cancel"].decode())
