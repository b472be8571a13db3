"""Building V2 responses for streams: chunk events, the final event and error events.

The stream contract (both transports): the last event of every stream carries the
parameters `final: true` and `finish_reason`; errors after a stream began arrive as that
final event with `finish_reason: "error"` and `error`. Parameter values stay bool, int or
str because gRPC's `InferParameter` silently drops anything else.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Protocol

from mlserver.errors import MLServerError
from mlserver.types import InferenceRequest, InferenceResponse, Parameters, ResponseOutput

logger = logging.getLogger(__name__)

FINAL = "final"
FINISH_REASON = "finish_reason"
ERROR = "error"
ERROR_RETRYABLE = "retryable"
REQUEST_INDEX = "request_index"

FINISH_ERROR = "error"

ParamValue = bool | int | str


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
    finish_reason: str,
    outputs: Sequence[ResponseOutput] = (),
    **params: ParamValue,
) -> InferenceResponse:
    """The last event of a stream (or of one request inside a bidi stream)."""
    return event(model, outputs, **{FINAL: True, FINISH_REASON: finish_reason, **params})


def error_message(err: BaseException) -> str:
    """The client-facing text of an error; unexpected errors are not leaked in detail."""
    if isinstance(err, MLServerError):
        return str(err)
    return f"internal error: {type(err).__name__}: {err}"


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
        FINISH_ERROR,
        outputs,
        **{ERROR: error_message(err), ERROR_RETRYABLE: retryable, **params},
    )


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


async def each_request(
    payloads: AsyncIterator[InferenceRequest],
    stream_one: Callable[[InferenceRequest, int], AsyncIterator[InferenceResponse]],
) -> AsyncIterator[InferenceResponse]:
    """The events of every request of a stream in turn; `stream_one` gets its request_index."""
    index = 0
    async for payload in payloads:
        async for item in stream_one(payload, index):
            yield item
        index += 1
