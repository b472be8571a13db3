"""Text settings are validated once, at load: every failure names the model, key and rule."""

from __future__ import annotations

import pytest
from mlserver.settings import ModelSettings

from mlserver_streaming.errors import InvalidSettings, ServerAtCapacity
from mlserver_streaming.settings import parse_extra
from mlserver_streaming.text.prompt import PromptLimits
from mlserver_streaming.text.settings import TextGenerationSettings, check_capacity


def test_defaults_are_typed_and_checked_like_a_request() -> None:
    settings = TextGenerationSettings(defaults={"temperature": "0.5", "stop": "\n"})
    assert settings.checked_defaults("m") == {"temperature": 0.5, "stop": ("\n",)}


@pytest.mark.parametrize(
    ("defaults", "message"),
    [
        (
            {"top_p": 1.5},
            "model 'poet': parameters.extra.defaults.top_p must be in (0, 1], got 1.5.",
        ),
        (
            {"max_tokens": 512},
            "model 'poet': parameters.extra.defaults.max_tokens must be in [1, 256], got 512.",
        ),
        (
            {"stop": [""]},
            "model 'poet': parameters.extra.defaults.each stop sequence must be a string of 1 "
            "to 128 characters, got ''.",
        ),
    ],
)
def test_a_bad_default_fails_the_load_not_each_request(defaults, message) -> None:
    with pytest.raises(InvalidSettings) as info:
        TextGenerationSettings(defaults=defaults).checked_defaults("poet")
    assert str(info.value) == message
    assert info.value.status_code == 422


def test_prompt_limits_fill_the_context_and_may_only_shrink_it() -> None:
    limits = PromptLimits.from_settings(TextGenerationSettings(), "poet", 256, bos_token_id=1)
    assert (limits.max_prompt_tokens, limits.max_total_tokens, limits.bos_token_id) == (
        255,
        256,
        1,
    )
    with pytest.raises(InvalidSettings) as info:
        PromptLimits.from_settings(TextGenerationSettings(max_total_tokens=300), "poet", 256)
    assert str(info.value) == (
        "model 'poet': parameters.extra.max_total_tokens must be <= the context window (256), "
        "got 300."
    )
    with pytest.raises(InvalidSettings) as info:
        PromptLimits.from_settings(
            TextGenerationSettings(max_total_tokens=100, max_prompt_tokens=100), "poet", 256
        )
    assert str(info.value) == (
        "model 'poet': parameters.extra.max_prompt_tokens must be < max_total_tokens (100), "
        "got 100."
    )


def test_the_resume_log_must_hold_a_whole_stream() -> None:
    settings = ModelSettings(
        name="poet",
        implementation="mlserver.MLModel",
        parameters={"extra": {"max_tokens_cap": 512, "resume_max_events": 512}},
    )
    with pytest.raises(InvalidSettings) as info:
        parse_extra(settings, TextGenerationSettings)
    assert "model 'poet': invalid parameters.extra" in str(info.value)
    assert "resume_max_events must be > max_tokens_cap (512)" in str(info.value)


def test_waiting_room_limit_refuses_with_a_retryable_error():
    check_capacity(0, max_waiting=1, max_running=1)  # one running, none waiting: fine
    with pytest.raises(ServerAtCapacity) as info:
        check_capacity(1, max_waiting=1, max_running=1)
    assert info.value.retryable and info.value.status_code == 429
    assert str(info.value) == (
        "server at capacity: 1 requests waiting (max_waiting=1, max_running=1); retry later."
    )
