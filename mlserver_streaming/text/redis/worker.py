"""The generation worker of Redis mode: `mlserver-streaming worker <model folder> --redis <url>`.

A third driver of the engine core (after `drivers/thread.py` and `drivers/process.py`): the
same `build_core` and `run_engine_loop`, with jobs in from Redis (`redis/feed.py`) and
each step's deltas out as entries of their streams' logs, one pipelined round trip per
step. A stream ends with its job's XACK. SIGTERM hands the jobs in flight back at once.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

import prometheus_client
from mlserver.repository.load import load_model_settings
from mlserver.utils import get_model_uri
from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeout

from ...settings import parse_extra
from ..core.engine_core import EngineSpec, build_core, run_engine_loop
from ..core.step_output import StepOutput
from ..drivers.metrics import GenerationMetrics
from ..responses import final_parameters
from ..settings import TextGenerationSettings
from ..streams.event_log import LogEntry
from .codec import (
    GROUP,
    REDIS_URL_ENV,
    Lifetimes,
    RedisKeys,
    entry_fields,
    event_id,
    model_keys,
)
from .feed import ActiveJob, JobFeed

logger = logging.getLogger(__name__)

MODEL_SETTINGS = "model-settings.json"


def load_spec(folder: Path) -> tuple[EngineSpec, str | None]:
    """The engine spec and version of a model folder, read as `mlserver start` reads it."""
    settings = load_model_settings(str(folder / MODEL_SETTINGS))
    path = Path(asyncio.run(get_model_uri(settings)))
    version = settings.parameters.version if settings.parameters else None
    return EngineSpec(path, parse_extra(settings, TextGenerationSettings), settings.name), version


WRITE_EVENT = """
-- KEYS: owner, events, meta, jobs. ARGV: consumer, entry id, maxlen, final (0/1),
-- retention, group, job message id, lifetime, then the entry's field/value pairs.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], ARGV[2], unpack(ARGV, 9))
if ARGV[4] == '1' then
  redis.call('EXPIRE', KEYS[2], ARGV[5])
  redis.call('EXPIRE', KEYS[3], ARGV[5])
  redis.call('XACK', KEYS[4], ARGV[6], ARGV[7])
  redis.call('XDEL', KEYS[4], ARGV[7])
  redis.call('DEL', KEYS[1])
else
  redis.call('EXPIRE', KEYS[2], ARGV[8], 'NX')
end
return 1
"""
"""One event, written only by the job's owner (the worker that last claimed it: a worker
that was paused past its lease is fenced out), at its index (Redis refuses an index twice);
the final one also acks the job. A log nobody ends expires with its claim."""


class Publisher:
    """Each step output's deltas to their streams' logs, in one pipeline per step."""

    def __init__(
        self,
        redis: Redis,
        keys: RedisKeys,
        feed: JobFeed,
        settings: TextGenerationSettings,
        metrics: GenerationMetrics,
    ) -> None:
        self.keys = keys
        self.feed = feed
        self.settings = settings
        self.lifetimes = Lifetimes.of(settings)
        self.metrics = metrics
        self.redis = redis
        self._write_event = redis.register_script(WRITE_EVENT)
        self.live = True
        """False once stopping: the last outputs (cancellations) are not written, the jobs
        go to another worker instead."""

    def publish(self, out: StepOutput) -> None:
        if not self.live:
            return
        self.metrics.observe_step(out)
        writes: list[tuple[int, ActiveJob, LogEntry]] = []
        now = time.monotonic()
        for request_id, delta in out.deltas.items():
            active = self.feed.jobs.get(request_id)
            if active is None:
                continue
            final = delta.finish_reason is not None
            if active.lost:  # another worker writes it: only free the slot at its end
                if final:
                    self.feed.finished(request_id)
                continue
            active.timing.record(self.metrics, delta, now)
            active.usage.completion_tokens += len(delta.token_ids)
            entry = LogEntry(delta, final_parameters(active.usage, delta) if final else {})
            writes.append((request_id, active, entry))
        if not writes:
            return
        results, retried = self._write(writes)
        for (request_id, active, entry), result in zip(writes, results, strict=True):
            active.next_index += 1
            taken = isinstance(result, ResponseError) and not retried
            if result == 0 or taken:  # another owner, or a front end ended it (timeout)
                self.feed.lose(request_id, ack=taken)
            elif entry.final:
                self.feed.finished(request_id)

    def _write(self, writes: list[tuple[int, ActiveJob, LogEntry]]) -> tuple[list, bool]:
        """The scripts' results (1 written, 0 not the owner, ResponseError: the index was
        taken) and whether Redis had to be retried (then a taken index is our own write)."""
        s, lifetimes = self.settings, self.lifetimes
        retried = False
        while True:
            try:
                with self.redis.pipeline(transaction=False) as pipe:
                    for _, active, entry in writes:
                        stream = active.job.stream_id
                        keys = self.keys
                        fields = [x for pair in entry_fields(entry).items() for x in pair]
                        args: list[Any] = [self.feed.consumer, event_id(active.next_index)]
                        args += [s.resume_max_events, int(entry.final), lifetimes.retention, GROUP]
                        args += [active.message_id, lifetimes.stream, *fields]
                        self._write_event(
                            keys=[keys.owner(stream), keys.events(stream), keys.meta(stream)]
                            + [keys.jobs],
                            args=args,
                            client=pipe,
                        )
                    return pipe.execute(raise_on_error=False), retried
            except (RedisConnectionError, RedisTimeout) as err:
                if not self.live:  # stopping while Redis is away: the jobs stay pending
                    return [None] * len(writes), True
                logger.warning("redis: %s; retrying the step's events", err)
                retried = True
                time.sleep(0.5)


def run_worker(folder: Path, url: str, consumer: str, metrics_port: int | None) -> None:
    """Load and warm up the model, join its consumer group, and generate until SIGTERM."""
    spec, version = load_spec(folder)
    settings = spec.settings
    core = build_core(spec)  # warmed up before it takes any job
    redis = Redis.from_url(url)
    keys = model_keys(spec.model_name, version)
    feed = JobFeed(redis, keys, consumer, settings)
    metrics = GenerationMetrics(spec.model_name, version)
    if metrics_port is not None:
        prometheus_client.start_http_server(metrics_port, addr="0.0.0.0")
    publisher = Publisher(redis, keys, feed, settings, metrics)

    def stop(signum: int, frame: object) -> None:
        logger.info("worker %s stopping (signal %d): handing its jobs back", consumer, signum)
        publisher.live = False
        feed.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    feed.join()
    logger.info("worker %s serving %s from %s", consumer, keys.model, url)
    run_engine_loop(core, feed, publisher.publish)


def main(argv: list[str] | None = None) -> int:
    """`mlserver-streaming worker <model folder> [--redis URL] [--consumer NAME]`."""
    parser = argparse.ArgumentParser(prog="mlserver-streaming")
    commands = parser.add_subparsers(dest="command", required=True)
    worker = commands.add_parser("worker", help="generate a model's Redis jobs")
    worker.add_argument("folder", type=Path, help=f"model folder (with {MODEL_SETTINGS})")
    worker.add_argument("--redis", default=os.environ.get(REDIS_URL_ENV), help="Redis URL")
    worker.add_argument(
        "--consumer",
        default=f"{socket.gethostname()}-{os.getpid()}",
        help="this worker's name in the consumer group (default: host-pid)",
    )
    worker.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="serve this worker's Prometheus metrics (mlserver_streaming:*) on this port",
    )
    args = parser.parse_args(argv)
    if not args.redis:
        parser.error(f"give --redis or set {REDIS_URL_ENV}")
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        run_worker(args.folder, args.redis, args.consumer, args.metrics_port)
    except RedisError as err:
        logger.error("redis at %s: %s", args.redis, err)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
