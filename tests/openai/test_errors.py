"""OpenAI's error shape from every failure."""

from __future__ import annotations

from mlserver_streaming.errors import InvalidParameter, ServerAtCapacity
from mlserver_streaming.events import FinishReason
from mlserver_streaming.openai.errors import from_exception, from_failed_delta, model_not_found
from mlserver_streaming.text.drivers.client import EngineUnavailable
from mlserver_streaming.text.sample.generation import Delta


def test_capacity_is_a_retryable_429():
    error = from_exception(ServerAtCapacity("server at capacity: 3 requests waiting"))
    assert error.status == 429 and error.headers() == {"Retry-After": "1"}
    assert error.body() == {
        "error": {
            "message": "server at capacity: 3 requests waiting",
            "type": "rate_limit_error",
            "param": None,
            "code": "server_at_capacity",
        }
    }


def test_typed_errors_keep_status_and_message():
    assert from_exception(InvalidParameter("bad")).status == 400
    gone = from_exception(EngineUnavailable("engine died"))
    assert (gone.status, gone.code, gone.headers()) == (503, "engine_unavailable", {})
    unexpected = from_exception(RuntimeError("boom"))
    assert unexpected.status == 500 and "boom" not in unexpected.message
    assert unexpected.message.startswith("internal error (error id ")


def test_unknown_model_lists_the_loaded_ones():
    error = model_not_found("nope", ["a", "b"])
    assert error.status == 404 and error.code == "model_not_found" and error.param == "model"
    assert error.message == "model 'nope' is not a loaded text generator; loaded: 'a', 'b'."


def test_failed_deltas():
    assert from_failed_delta(Delta(finish_reason=FinishReason.LENGTH)) is None
    timeout = from_failed_delta(
        Delta(finish_reason=FinishReason.TIMEOUT, error="deadline exceeded")
    )
    assert timeout is not None and (timeout.status, timeout.code) == (504, "timeout")
    assert timeout.body()["error"]["message"] == "deadline exceeded"
    retry = from_failed_delta(Delta(finish_reason=FinishReason.ERROR, error="x", retryable=True))
    assert retry is not None and retry.status == 503
    shutdown = from_failed_delta(Delta(finish_reason=FinishReason.CANCELLED, error="shutting down"))
    assert shutdown is not None and shutdown.code == "cancelled"
