"""Messages between the runtime and the engine process: small, picklable, versionless.

Deltas cross as plain tuples (`pack`/`unpack`), which pickle about 5x faster than the
dataclass: at 32 streams a step report of 32 deltas costs ~9 us to dump instead of 43.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from .generation import Delta
from .params import GenerationParams
from .stopping import FinishReason


@dataclass(frozen=True)
class Submit:
    """Start a generation; times are `time.monotonic()`, which is system-wide."""

    request_id: int
    prompt_ids: list[int]
    params: GenerationParams
    arrival: float
    deadline: float


@dataclass(frozen=True)
class Cancel:
    """Drop a request (its client left); it ends with a `cancelled` delta."""

    request_id: int


@dataclass(frozen=True)
class Stop:
    """Cancel everything, send a last report and exit."""


@dataclass(frozen=True)
class Ready:
    """The engine is loaded and warmed up."""


@dataclass(frozen=True)
class Failed:
    """The engine could not start; `message` says why."""

    message: str


WireDelta = tuple[
    int,
    str,
    list[int],
    list[float],
    list[tuple[tuple[int, float], ...]],
    str | None,
    str | None,
    bool,
]
"""(request id, then a Delta's fields): plain tuples pickle ~5x faster than dataclasses."""


def pack(request_id: int, delta: Delta) -> WireDelta:
    """A delta as it crosses the pipe."""
    reason = None if delta.finish_reason is None else delta.finish_reason.value
    fields = (delta.text, delta.token_ids, delta.logprobs, delta.top_logprobs)
    return (request_id, *fields, reason, delta.error, delta.retryable)


def unpack(wire: WireDelta) -> tuple[int, Delta]:
    """The request id and delta of a packed delta."""
    rid, text, token_ids, logprobs, top_logprobs, reason, error, retryable = wire
    finish = None if reason is None else FinishReason(reason)
    return rid, Delta(text, token_ids, logprobs, top_logprobs, finish, error, retryable)


class StepReport(NamedTuple):
    """Everything one engine step produced, in one message."""

    deltas: list[WireDelta]
    running: int
    waiting: int
    steps: int
    admitted: list[tuple[int, float]]
    """(request id, seconds it waited for a slot) of requests admitted this step."""
