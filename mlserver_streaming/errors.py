"""Typed errors: each says what was wrong, what is allowed and what was received.

They subclass `MLServerError`, so MLServer turns them into the right REST status and
gRPC code for unary calls; inside a stream the runtimes turn them into a final event.
"""

from __future__ import annotations

import logging
import secrets

import grpc
from mlserver.errors import MLServerError
from mlserver.grpc import utils as grpc_utils

logger = logging.getLogger(__name__)

HTTP_BAD_REQUEST = 400
HTTP_NOT_FOUND = 404
HTTP_UNPROCESSABLE = 422
HTTP_TOO_MANY_REQUESTS = 429
HTTP_UNAVAILABLE = 503

# MLServer maps only 400/404/422/500 to gRPC codes and answers UNKNOWN for the rest;
# capacity errors deserve their proper, retry-aware codes.
grpc_utils.STATUS_CODE_MAPPING.setdefault(
    HTTP_TOO_MANY_REQUESTS, grpc.StatusCode.RESOURCE_EXHAUSTED
)
grpc_utils.STATUS_CODE_MAPPING.setdefault(HTTP_UNAVAILABLE, grpc.StatusCode.UNAVAILABLE)


class StreamingError(MLServerError):
    """Base class of this package's errors; `retryable` tells clients to try again later."""

    retryable = False

    def __init__(self, msg: str, status_code: int = HTTP_BAD_REQUEST):
        super().__init__(msg, status_code)


class InvalidInput(StreamingError):
    """A request tensor is missing or has the wrong name, datatype, shape or values."""


class InvalidParameter(StreamingError):
    """A request parameter is unknown, of the wrong type or out of its range."""


class InvalidSettings(StreamingError):
    """`parameters.extra` in model-settings.json is invalid: the model fails to load."""

    def __init__(self, msg: str):
        super().__init__(msg, HTTP_UNPROCESSABLE)


class ServerAtCapacity(StreamingError):
    """Too many requests are waiting; the client should retry after a short pause."""

    retryable = True

    def __init__(self, msg: str):
        super().__init__(msg, HTTP_TOO_MANY_REQUESTS)


class RedisUnavailable(StreamingError):
    """Redis (the job queue and the event logs of Redis mode) did not answer; try again
    once it is back: front ends and workers reconnect by themselves."""

    retryable = True

    def __init__(self, msg: str):
        super().__init__(msg, HTTP_UNAVAILABLE)


class StreamNotFound(StreamingError):
    """A resumed or cancelled stream id that is unknown, expired or trimmed (gRPC NOT_FOUND)."""

    def __init__(self, msg: str):
        super().__init__(msg, HTTP_NOT_FOUND)


def client_message(err: BaseException, what: str = "internal error") -> str:
    """The one rule for what a client sees of an error. Our typed errors (and MLServer's)
    say what was wrong, allowed and received: their message. Anything else is `what` and an
    id, and the detail goes to the server log under that id: an exception's text can hold
    internals (paths, hosts, library state) that are no client's business."""
    if isinstance(err, MLServerError):
        return str(err)
    error_id = secrets.token_hex(6)
    logger.error("%s (error id %s)", what, error_id, exc_info=err)
    return f"{what} (error id {error_id}); the server log has the details."
