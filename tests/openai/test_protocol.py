"""Request bodies: what is served, what is accepted only when neutral, what is refused."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from mlserver_streaming.openai.errors import OpenAIError, from_exception
from mlserver_streaming.openai.protocol import ChatCompletionRequest, CompletionRequest

BASE = {"model": "poet", "prompt": "ROMEO:"}
CHAT = {"model": "poet", "messages": [{"role": "user", "content": "Who's there?"}]}


def refusal(model, body) -> tuple[str | None, str]:
    with pytest.raises((OpenAIError, ValidationError)) as info:
        model.model_validate(body)
    error = from_exception(info.value)
    assert error.status == 400
    return error.param, error.message


def test_completion_fields_map_to_the_v2_parameter_names():
    body = {**BASE, "max_tokens": 5, "temperature": 0.5, "top_p": 0.9, "top_k": 4, "seed": 1}
    body |= {"stop": "\n", "repetition_penalty": 1.2, "logprobs": 2, "stream_interval": 2}
    raw = CompletionRequest.model_validate(body).raw_parameters()
    assert raw == {
        "max_tokens": 5,
        "logprobs": 2,
        "temperature": 0.5,
        "top_p": 0.9,
        "top_k": 4,
        "repetition_penalty": 1.2,
        "seed": 1,
        "stop": "\n",
        "stream_interval": 2,
    }
    assert CompletionRequest.model_validate(BASE).raw_parameters() == {}  # model defaults


@pytest.mark.parametrize(
    ("prompt", "accepted"), [(["one"], "one"), ("text", "text")], ids=["list-of-one", "string"]
)
def test_a_prompt_is_one_string(prompt, accepted):
    assert CompletionRequest.model_validate({**BASE, "prompt": prompt}).prompt == accepted


@pytest.mark.parametrize(
    ("prompt", "message"),
    [([1, 2, 3], "token-id prompts are not supported"), (["a", "b"], "got a list of 2")],
    ids=["token-ids", "two-prompts"],
)
def test_other_prompts_are_refused(prompt, message):
    param, text = refusal(CompletionRequest, {**BASE, "prompt": prompt})
    assert param == "prompt" and message in text


@pytest.mark.parametrize(
    "neutral",
    [
        {"logit_bias": {}},
        {"presence_penalty": 0},
        {"frequency_penalty": 0.0},
        {"best_of": 1},
        {"echo": False},
        {"suffix": None},
        {"response_format": {"type": "text"}},
        {"user": "u-1"},
    ],
    ids=lambda d: next(iter(d)),
)
def test_neutral_values_of_unsupported_fields_are_accepted(neutral):
    assert CompletionRequest.model_validate({**BASE, **neutral}).raw_parameters() == {}


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("logit_bias", {"50": 5}, "logit_bias is not supported"),
        ("presence_penalty", 0.5, "repetition_penalty (vLLM's extension) is"),
        ("best_of", 3, "best_of is not supported (use n)"),
        ("echo", True, "echo is not supported"),
        ("suffix", "end", "suffix is not supported"),
        ("response_format", {"type": "json_object"}, "no JSON mode"),
        ("n", 17, "n must be in [1, 16], got 17."),
        ("functions", [{"name": "f"}], "unsupported field 'functions'"),
    ],
)
def test_completion_refusals_name_the_field(field, value, message):
    param, text = refusal(CompletionRequest, {**BASE, field: value})
    assert param == field and message in text


def test_stream_options_need_a_stream_and_only_include_usage_is_served():
    assert CompletionRequest.model_validate(
        {**BASE, "stream": True, "stream_options": {"include_usage": True}}
    ).include_usage
    param, _ = refusal(CompletionRequest, {**BASE, "stream_options": {"include_usage": True}})
    assert param == "stream_options"
    body = {**BASE, "stream": True, "stream_options": {"continuous_usage_stats": True}}
    assert refusal(CompletionRequest, body)[0] == "stream_options.continuous_usage_stats"


def test_chat_max_tokens_and_logprobs_mapping():
    chat = ChatCompletionRequest.model_validate(
        {**CHAT, "max_completion_tokens": 7, "logprobs": True, "top_logprobs": 3}
    )
    assert chat.raw_parameters() == {"max_tokens": 7, "logprobs": 3}
    assert chat.field_names() == {"max_tokens": "max_completion_tokens", "logprobs": "top_logprobs"}
    assert ChatCompletionRequest.model_validate({**CHAT, "logprobs": True}).raw_parameters() == {
        "logprobs": 0
    }
    assert ChatCompletionRequest.model_validate({**CHAT, "max_tokens": 4}).raw_parameters() == {
        "max_tokens": 4
    }


@pytest.mark.parametrize(
    ("extra", "param", "message"),
    [
        ({"top_logprobs": 2}, "top_logprobs", "needs logprobs: true"),
        ({"max_tokens": 3, "max_completion_tokens": 4}, "max_tokens", "not two different"),
        ({"tools": [{"type": "function"}]}, "tools", "no tool calling"),
        ({"tool_choice": "auto"}, "tool_choice", "no tool calling"),
        ({"messages": []}, "messages", "at least one message"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages.0.role", "'assistant'"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
            "messages.content",
            "'image_url' are not supported",
        ),
        (
            {"messages": [{"role": "assistant", "content": "x", "tool_calls": [{"id": "1"}]}]},
            "messages.0.tool_calls",
            "unsupported field",
        ),
    ],
)
def test_chat_refusals_name_the_field(extra, param, message):
    got_param, text = refusal(ChatCompletionRequest, {**CHAT, **extra})
    assert got_param == param and message in text


def test_messages_as_the_template_sees_them():
    chat = ChatCompletionRequest.model_validate(
        {
            **CHAT,
            "messages": [
                {"role": "system", "content": "A platform."},
                {
                    "role": "user",
                    "name": "bernardo",
                    "content": [
                        {"type": "text", "text": "Who's "},
                        {"type": "text", "text": "there?"},
                    ],
                },
                {"role": "assistant", "content": "Nay.", "tool_calls": [], "refusal": None},
            ],
            "tool_choice": "none",
            "parallel_tool_calls": True,
        }
    )
    assert chat.template_messages() == [
        {"role": "system", "content": "A platform."},
        {"role": "user", "content": "Who's there?", "name": "bernardo"},
        {"role": "assistant", "content": "Nay."},
    ]
