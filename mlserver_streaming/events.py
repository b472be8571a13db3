"""Building V2 responses for streams: chunk events, the final event and error events.

The stream contract (both transports): the last event of every stream carries the
parameters `final: true` and `finish_reason`; errors after a stream began arrive as that
final event with `finish_reason: "error"` and `error`. Parameter values stay bool, int or
str because gRPC's `InferParameter` silently drops anything else.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Sequence
from enum import StrEnum
from typing import Protocol

from mlserver.errors import MLServerError
from mlserver.types import InferenceRequest, InferenceResponse, Parameters, ResponseOutput

from .errors import client_message

logger = logging.getLogger(__name__)

FINAL = "final"
FINISH_REASON = "finish_reason"
ERROR = "error"
ERROR_RETRYABLE = "retryable"
REQUEST_INDEX = "request_index"
EVENT_INDEX = "event_index"
"""A text event's place in its stream's log: 0, 1, 2, ... with no gaps (for resume)."""

ParamValue = bool | int | str


class FinishReason(StrEnum):
    """Why a stream (or one request of a bidi stream) ended, for every runtime; the value goes
    on the wire as `finish_reason`."""

    STOP = "stop"
    """Text: a stop sequence matched. Word model: the last word was sent."""
    EOS = "eos"
    """The model produced its end-of-sequence token."""
    LENGTH = "length"
    """max_tokens new tokens were generated."""
    CANCELLED = "cancelled"
    """The client went away or cancelled the request."""
    ERROR = "error"
    """The request failed; the final event carries `error` and `retryable`."""
    TIMEOUT = "timeout"
    """The request ran past its deadline."""
    COMPLETE = "complete"
    """Classifier: every row of the request is answered."""


class ModelIdentity(Protocol):
    """What an event needs to know about the model that produced it."""

    @property
    def name(self) -> str: ...

    @property
    def version(self) -> str | None: ...


def wire_parameters(values: dict[str, ParamValue]) -> Parameters:
    """Parameters that survive both transports; a float here would vanish over gRPC."""
    for key, value in values.items():
        if not isinstance(value, bool | int | str):
            raise TypeError(f"event parameter {key!r} must be bool, int or str, got {value!r}")
    return Parameters(**values)


def event(
    model: ModelIdentity, outputs: Sequence[ResponseOutput], **params: ParamValue
) -> InferenceResponse:
    """One non-final event of a stream."""
    return InferenceResponse(
        model_name=model.name,
        model_version=model.version,
        outputs=list(outputs),
        parameters=wire_parameters(params) if params else None,
    )


def final_event(
    model: ModelIdentity,
    finish_reason: FinishReason,
    outputs: Sequence[ResponseOutput] = (),
    **params: ParamValue,
) -> InferenceResponse:
    """The last event of a stream (or of one request inside a bidi stream)."""
    return event(model, outputs, **{FINAL: True, FINISH_REASON: finish_reason.value, **params})


def error_message(err: BaseException) -> str:
    """The client-facing text of an error (`errors.client_message`)."""
    return client_message(err)


def error_event(
    model: ModelIdentity,
    err: BaseException,
    outputs: Sequence[ResponseOutput] = (),
    **params: ParamValue,
) -> InferenceResponse:
    """A final event that reports an error instead of dropping the connection."""
    retryable = bool(getattr(err, "retryable", False))
    return final_event(
        model,
        FinishReason.ERROR,
        outputs,
        **{ERROR: error_message(err), ERROR_RETRYABLE: retryable, **params},
    )


StreamOne = Callable[[InferenceRequest, dict[str, ParamValue]], AsyncIterator[InferenceResponse]]
"""The events of one request; every event carries the given tags (its `request_index`)."""


async def ending_with_error_event(
    model: ModelIdentity,
    events: AsyncIterator[InferenceResponse],
    outputs: Sequence[ResponseOutput] = (),
    **params: ParamValue,
) -> AsyncIterator[InferenceResponse]:
    """Pass events through; if they fail, end with an error event rather than an exception."""
    try:
        async for item in events:
            yield item
    except Exception as err:  # noqa: BLE001 - every failure must become a final event
        if not isinstance(err, MLServerError):
            logger.exception("stream of model %s failed", model.name)
        yield error_event(model, err, outputs, **params)


async def stream_requests(
    model: ModelIdentity,
    payloads: AsyncIterator[InferenceRequest],
    stream_one: StreamOne,
    error_outputs: Sequence[ResponseOutput] = (),
) -> AsyncIterator[InferenceResponse]:
    """`predict_stream` of every runtime: the requests of a stream in turn (over gRPC bidi each
    is a new turn), each one's events tagged with its `request_index`, and a failure ending
    that request with an error event (carrying `error_outputs`) while the stream goes on."""
    index = 0
    async for payload in payloads:
        tags: dict[str, ParamValue] = {REQUEST_INDEX: index}
        events = stream_one(payload, tags)
        async for item in ending_with_error_event(model, events, error_outputs, **tags):
            yield item
        index += 1
