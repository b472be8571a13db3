"""What Redis mode stores, and its key names: jobs, log entries, stream metadata.

Pure encoding, shared by the front ends (`redis/backend.py`, `redis/log.py`) and the
workers (`worker.py`), so both sides read the same fields. A stream's event `i` is the
Redis Stream entry with the explicit id `0-(i+1)`: Redis refuses an id at or below the
last one, so no event index is ever written twice, even by a worker that lost its job.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ...events import FinishReason, ParamValue
from ..responses import Usage, final_parameters
from ..sample.generation import Delta
from ..sample.params import GenerationParams
from ..settings import TextGenerationSettings
from ..streams.event_log import LogEntry

REDIS_URL_ENV = "MLSERVER_STREAMING_REDIS_URL"
GROUP = "workers"
"""The consumer group of every model's job stream."""

Fields = Mapping[bytes | str, bytes | str]
"""Fields as Redis returns them (bytes) or as written (str)."""
OutFields = dict[Any, Any]
"""Fields to write (redis-py's own type is a union no dict literal matches)."""


@dataclass(frozen=True)
class RedisKeys:
    """The key names of one model, under one prefix so several models share a Redis; the
    model in braces is a Redis Cluster hash tag, so one model's keys share a node."""

    model: str
    prefix: str = "mlserver-streaming"

    @property
    def jobs(self) -> str:
        """The job stream, read by the workers' consumer group."""
        return f"{self.prefix}:{{{self.model}}}:jobs"

    @property
    def control(self) -> str:
        """Cancels, read by every worker (not a group: the job's owner acts on it)."""
        return f"{self.prefix}:{{{self.model}}}:control"

    def events(self, stream_id: str) -> str:
        """One stream's events (its log), what every front end reads."""
        return f"{self.prefix}:{{{self.model}}}:events:{stream_id}"

    def meta(self, stream_id: str) -> str:
        """One stream's claim and what its readers need (logprobs, deadline)."""
        return f"{self.prefix}:{{{self.model}}}:meta:{stream_id}"

    def owner(self, stream_id: str) -> str:
        """The consumer that last claimed the stream's job: the only one that may write."""
        return f"{self.prefix}:{{{self.model}}}:owner:{stream_id}"

    def cancelled(self, stream_id: str) -> str:
        """Set when a stream is cancelled, for a worker that claims its job later."""
        return f"{self.prefix}:{{{self.model}}}:cancelled:{stream_id}"


@dataclass(frozen=True)
class Lifetimes:
    """How long Redis keeps a stream's keys (seconds), from the model's settings: one rule
    for front ends and workers."""

    job: int
    """A job's own keys (owner, cancelled): its deadline plus a lease."""
    stream: int
    """A stream's claim and log if nothing ever ends it: the job's, plus the retention."""
    retention: int
    """A stream's claim and log after its final event (at least 1: Redis wants > 0)."""

    @classmethod
    def of(cls, settings: TextGenerationSettings) -> Lifetimes:
        job = int(settings.request_timeout_s + settings.redis_lease_s) + 1
        retention = max(1, int(settings.resume_retention_s))
        return cls(job, job + int(settings.resume_retention_s), retention)


def model_keys(name: str, version: str | None) -> RedisKeys:
    """The Redis keys of one model version; front ends and workers name it alike."""
    return RedisKeys(f"{name}@{version}" if version else name)


def event_id(index: int) -> str:
    """The Redis Stream entry id of event `index`."""
    return f"0-{index + 1}"


def event_index(entry_id: bytes | str) -> int:
    """The event index of a Redis Stream entry id."""
    raw = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return int(raw.partition("-")[2]) - 1


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _get(fields: Fields, name: str) -> bytes | str:
    return fields[name.encode()] if name.encode() in fields else fields[name]


def entry_fields(entry: LogEntry) -> OutFields:
    """A log entry as Redis Stream fields."""
    d = entry.delta
    reason = None if d.finish_reason is None else d.finish_reason.value
    delta = [d.text, d.token_ids, d.logprobs, d.top_logprobs, reason, d.error, d.retryable]
    fields: OutFields = {"d": json.dumps(delta, separators=(",", ":"))}
    if entry.final_params:
        fields["f"] = json.dumps(dict(entry.final_params), separators=(",", ":"))
    return fields


def entry_from_fields(fields: Fields) -> LogEntry:
    """The log entry of Redis Stream fields written by `entry_fields`."""
    text, ids, logprobs, top, reason, error, retryable = json.loads(_get(fields, "d"))
    delta = Delta(
        text,
        ids,
        logprobs,
        [tuple((int(t), float(p)) for t, p in row) for row in top],
        None if reason is None else FinishReason(reason),
        error,
        retryable,
    )
    final: dict[str, ParamValue] = {}
    if b"f" in fields or "f" in fields:
        final = json.loads(_get(fields, "f"))
    return LogEntry(delta, final)


def timeout_entry(usage: Usage, deadline: float, now: float) -> LogEntry:
    """The final entry of a stream past its deadline that no engine ended."""
    late = f"request deadline exceeded ({now - deadline:.1f} s past it)"
    delta = Delta(finish_reason=FinishReason.TIMEOUT, error=late)
    return LogEntry(delta, final_parameters(usage, delta))


@dataclass(frozen=True)
class Job:
    """One generation request as the job stream carries it."""

    stream_id: str
    prompt_ids: list[int]
    params: GenerationParams
    deadline: float
    """Wall-clock time (`time.time()`): front ends and workers may be different machines."""

    def fields(self) -> OutFields:
        """The job as Redis Stream fields."""
        params = dataclasses.asdict(self.params)
        return {
            "stream": self.stream_id,
            "prompt": json.dumps(self.prompt_ids, separators=(",", ":")),
            "params": json.dumps(params, separators=(",", ":")),
            "deadline": repr(self.deadline),
        }

    @classmethod
    def from_fields(cls, fields: Fields) -> Job:
        """The job of Redis Stream fields written by `fields`."""
        params = json.loads(_get(fields, "params"))
        params["stop"] = tuple(params["stop"])
        return cls(
            _text(_get(fields, "stream")),
            json.loads(_get(fields, "prompt")),
            GenerationParams(**params),
            float(_get(fields, "deadline")),
        )


@dataclass
class JobUsage:
    """What a stream's final event reports (`responses.Usage`), counted where it ends."""

    prompt_tokens: int
    seed: int
    completion_tokens: int = 0


@dataclass(frozen=True)
class StreamMeta:
    """What a reader needs before the first event: the request's logprobs (the shape of
    every event), its deadline (past it, any front end ends the stream `timeout`), and
    its usage fields for a final event written without the worker."""

    logprobs: int | None
    deadline: float
    prompt_tokens: int
    seed: int

    @classmethod
    def of(cls, job: Job) -> StreamMeta:
        """The metadata of a job's stream."""
        params = job.params
        return cls(params.logprobs, job.deadline, len(job.prompt_ids), params.seed)

    def usage(self, completion_tokens: int) -> JobUsage:
        """The usage of this stream after `completion_tokens`."""
        return JobUsage(self.prompt_tokens, self.seed, completion_tokens)

    def encode(self) -> str:
        return json.dumps([self.logprobs, self.deadline, self.prompt_tokens, self.seed])

    @classmethod
    def decode(cls, raw: bytes | str) -> StreamMeta:
        logprobs, deadline, prompt_tokens, seed = json.loads(raw)
        return cls(logprobs, deadline, prompt_tokens, seed)
