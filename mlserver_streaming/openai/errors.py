"""Errors in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`.

Every failure of an OpenAI route becomes one of these: before a stream starts as an HTTP
status (400 naming the field, 404 unknown model, 429 with Retry-After at capacity, 503 when
the engine is gone); after it started, in-band as `data: {"error": ...}` then `data: [DONE]`.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from ..errors import (
    HTTP_BAD_REQUEST,
    HTTP_NOT_FOUND,
    HTTP_TOO_MANY_REQUESTS,
    HTTP_UNAVAILABLE,
    StreamingError,
    client_message,
)
from ..events import FinishReason
from ..text.sample.generation import Delta

HTTP_PAYLOAD_TOO_LARGE = 413
HTTP_INTERNAL = 500
HTTP_GATEWAY_TIMEOUT = 504

INVALID_REQUEST = "invalid_request_error"
RATE_LIMIT = "rate_limit_error"
SERVER_ERROR = "server_error"

RETRY_AFTER_S = 1
"""Seconds a client is told to wait after a 429 (the `Retry-After` header)."""


class OpenAIError(Exception):
    """An error the client sees in OpenAI's shape, with its HTTP status."""

    def __init__(
        self,
        message: str,
        status: int = HTTP_BAD_REQUEST,
        kind: str = INVALID_REQUEST,
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message, self.status, self.kind = message, status, kind
        # `kind` goes on the wire as OpenAI's `type` (a builtin's name here).
        self.param, self.code = param, code

    def body(self) -> dict[str, Any]:
        """The JSON body: `{"error": {...}}`."""
        error = {"message": self.message, "type": self.kind, "param": self.param}
        return {"error": {**error, "code": self.code}}

    def headers(self) -> dict[str, str]:
        """`Retry-After` on 429, so SDKs back off and retry."""
        return {"Retry-After": str(RETRY_AFTER_S)} if self.status == HTTP_TOO_MANY_REQUESTS else {}


def invalid(message: str, param: str | None) -> OpenAIError:
    """A 400 naming the field."""
    return OpenAIError(message, HTTP_BAD_REQUEST, INVALID_REQUEST, param)


def body_too_large(limit: int) -> OpenAIError:
    """A 413 for a request body past the routes' limit."""
    return OpenAIError(
        f"the request body must be at most {limit} bytes.",
        HTTP_PAYLOAD_TOO_LARGE,
        INVALID_REQUEST,
        None,
    )


def model_not_found(name: str, loaded: list[str]) -> OpenAIError:
    """A 404 for a `model` that is not a loaded text generator."""
    names = ", ".join(repr(n) for n in loaded) or "none"
    return OpenAIError(
        f"model {name!r} is not a loaded text generator; loaded: {names}.",
        HTTP_NOT_FOUND,
        INVALID_REQUEST,
        "model",
        "model_not_found",
    )


def from_validation(err: ValidationError) -> OpenAIError:
    """The first pydantic error as a 400 naming its field (`messages.0.role`)."""
    first = err.errors()[0]
    param = ".".join(str(part) for part in first["loc"]) or None
    if first["type"] == "extra_forbidden":
        return invalid(f"unsupported field {param!r}: this server does not implement it.", param)
    shown = f"{param}: " if param else ""
    return invalid(f"{shown}{first['msg']}, got {first.get('input')!r}.", param)


def from_exception(err: BaseException) -> OpenAIError:
    """Any failure as an OpenAIError: our typed errors keep their status and message."""
    if isinstance(err, OpenAIError):
        return err
    if isinstance(err, ValidationError):
        return from_validation(err)
    if isinstance(err, StreamingError):
        status = err.status_code
        if status == HTTP_TOO_MANY_REQUESTS:
            return OpenAIError(str(err), status, RATE_LIMIT, None, "server_at_capacity")
        if status == HTTP_UNAVAILABLE:
            return OpenAIError(str(err), status, SERVER_ERROR, None, "engine_unavailable")
        return OpenAIError(str(err), status, INVALID_REQUEST if status < 500 else SERVER_ERROR)
    return OpenAIError(client_message(err), HTTP_INTERNAL, SERVER_ERROR)


_ENDED = {
    FinishReason.ERROR: (HTTP_INTERNAL, "generation_failed"),
    FinishReason.TIMEOUT: (HTTP_GATEWAY_TIMEOUT, "timeout"),
    FinishReason.CANCELLED: (HTTP_UNAVAILABLE, "cancelled"),
}


def from_failed_delta(delta: Delta) -> OpenAIError | None:
    """The error behind a final delta that did not finish normally (error, timeout, or
    cancelled by the server, e.g. at shutdown), else None."""
    if delta.finish_reason not in _ENDED:
        return None
    status, code = _ENDED[delta.finish_reason]
    if delta.retryable:
        status = HTTP_UNAVAILABLE
    message = delta.error or f"generation ended: {delta.finish_reason}"
    return OpenAIError(message, status, SERVER_ERROR, None, code)
