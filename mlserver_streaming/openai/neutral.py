"""OpenAI fields we accept only at their neutral value (the value that asks for nothing:
`logit_bias: {}`, `presence_penalty: 0`, `echo: false`, `tool_choice: "none"`,
`response_format: {"type": "text"}` ...), because common clients send those by default;
any other value is refused with a 400 naming the field."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .errors import invalid


def _none(value: Any) -> bool:
    return value is None


def _empty(value: Any) -> bool:
    return value is None or value == [] or value == {}


def _zero(value: Any) -> bool:
    return value is None or value == 0


def _false(value: Any) -> bool:
    return value is None or value is False


_PENALTY = "is not supported; repetition_penalty (vLLM's extension) is"
_NO_TOOLS = "is not supported: this model has no tool calling"
# field -> (is the value neutral?, why any other value is refused)
_NEUTRAL_ONLY: dict[str, tuple[Callable[[Any], bool], str]] = {
    "logit_bias": (_empty, "is not supported"),
    "presence_penalty": (_zero, _PENALTY),
    "frequency_penalty": (_zero, _PENALTY),
    "best_of": (lambda v: v in (None, 1), "is not supported (use n)"),
    "echo": (_false, "is not supported"),
    "suffix": (_none, "is not supported (no insertion)"),
    "tools": (_empty, _NO_TOOLS),
    "tool_choice": (lambda v: v in (None, "none"), _NO_TOOLS),
    "parallel_tool_calls": (lambda v: v is None or isinstance(v, bool), _NO_TOOLS),
    "functions": (_empty, _NO_TOOLS),
    "function_call": (lambda v: v in (None, "none"), _NO_TOOLS),
    "response_format": (
        lambda v: v is None or v == {"type": "text"},
        "is not supported except {'type': 'text'} (no JSON mode or JSON schema)",
    ),
    "continue_final_message": (_false, "is not supported"),
}
COMPLETION_NEUTRAL: tuple[str, ...] = ("logit_bias", "presence_penalty", "frequency_penalty")
COMPLETION_NEUTRAL += ("best_of", "echo", "suffix", "response_format")
CHAT_NEUTRAL: tuple[str, ...] = ("logit_bias", "presence_penalty", "frequency_penalty", "tools")
CHAT_NEUTRAL += ("tool_choice", "parallel_tool_calls", "functions", "function_call")
CHAT_NEUTRAL += ("response_format", "echo", "continue_final_message")
# What clients echo back on assistant messages: accepted empty, refused otherwise.
MESSAGE_NEUTRAL = {"tool_calls": _empty, "function_call": _none, "tool_call_id": _none}
MESSAGE_NEUTRAL |= {"refusal": _none, "audio": _none, "annotations": _empty}


def drop_neutral(data: Any, fields: tuple[str, ...], where: str = "") -> Any:
    """Remove neutral-valued unsupported fields; refuse the field if its value asks for more."""
    if not isinstance(data, dict):
        return data
    kept = dict(data)
    for name in fields:
        if name in kept:
            neutral, why = _NEUTRAL_ONLY[name]
            if not neutral(kept.pop(name)):
                raise invalid(f"{name} {why}; got {data[name]!r}.", where + name)
    return kept
