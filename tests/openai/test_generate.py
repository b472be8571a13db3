"""Parser errors named after the client's fields."""

from __future__ import annotations

from mlserver_streaming.errors import InvalidInput, InvalidParameter
from mlserver_streaming.openai.generate import named_error


def test_the_v2_name_becomes_the_field_sent():
    error = named_error(
        InvalidParameter("max_tokens must be in [1, 256], got 999."),
        {"max_tokens": "max_completion_tokens"},
        "messages",
    )
    assert error.param == "max_completion_tokens"
    assert error.message == "max_completion_tokens must be in [1, 256], got 999."


def test_stop_and_prompt_errors():
    stop = named_error(InvalidParameter("each stop sequence must be a string"), {}, "prompt")
    assert stop.param == "stop"
    long = named_error(
        InvalidInput("input 'prompt' must be at most 255 tokens, got 300."), {}, "messages"
    )
    assert (
        long.param == "messages" and long.message == "messages must be at most 255 tokens, got 300."
    )
