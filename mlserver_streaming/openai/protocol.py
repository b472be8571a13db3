"""OpenAI request bodies, validated with pydantic (after vLLM's `protocol.py`).

Every field the API defines is either served, or refused with a 400 naming it: a field we do
not implement is never silently ignored. A few are accepted only at their neutral value (the
value that asks for nothing: `logit_bias: {}`, `presence_penalty: 0`, `echo: false`,
`tool_choice: "none"`, `response_format: {"type": "text"}` ...), because common clients send
those by default. Fields outside the API (and vLLM's extensions we lack) fail as unknown.
Values are only type-checked here; ranges are the model's own (`RequestParser.build`), so the
OpenAI routes have exactly the V2 path's defaults and limits.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from ..errors import InvalidParameter
from ..params import check_range
from ..text.params import MAX_LOGPROBS
from .errors import invalid

MAX_N = 16
"""Choices per request at most; each is its own sequence in the batch (and capacity)."""


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


def checked_range(name: str, value: int, low: int, high: int) -> None:
    """check_range, as a 400 naming the field."""
    try:
        check_range(name, value, low, high)
    except InvalidParameter as err:
        raise invalid(str(err), name) from err


class Strict(BaseModel):
    """Unknown fields fail (pydantic's `extra_forbidden` becomes a 400 naming the field)."""

    model_config = ConfigDict(extra="forbid")


class StreamOptions(Strict):
    """`stream_options`: only `include_usage` is served."""

    include_usage: bool = False
    """Send a last chunk with `usage` and `choices: []` before `data: [DONE]`."""
    continuous_usage_stats: bool = False
    """vLLM's usage on every chunk: refused when true."""

    @field_validator("continuous_usage_stats")
    @classmethod
    def _no_continuous(cls, value: bool) -> bool:
        if value:
            raise invalid(
                "stream_options.continuous_usage_stats is not supported; use include_usage.",
                "stream_options.continuous_usage_stats",
            )
        return value


class Sampling(Strict):
    """The fields both endpoints share; values pass to the model's parameter parser."""

    model: str
    """The loaded text generator's name."""
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    """vLLM's extension."""
    repetition_penalty: float | None = None
    """vLLM's extension."""
    seed: int | None = None
    """Choice i of n samples with seed + i (mod 2**63); without a seed each draws its own."""
    stop: str | list[str] | None = None
    n: int = 1
    """Choices, in [1, MAX_N]; each is its own sequence, submitted together."""
    stream: bool = False
    stream_options: StreamOptions | None = None
    stream_interval: int | None = None
    """vLLM's extension: tokens per streamed chunk (0 or absent: the server's auto)."""
    user: str | None = None
    """An end-user id (OpenAI uses it for abuse monitoring); accepted, affects nothing."""

    @model_validator(mode="after")
    def _check_shared(self) -> Sampling:
        checked_range("n", self.n, 1, MAX_N)
        if self.stream_options is not None and not self.stream:
            raise invalid("stream_options is only allowed with stream: true.", "stream_options")
        return self

    @property
    def include_usage(self) -> bool:
        """Whether a stream ends with the usage chunk."""
        return self.stream_options is not None and self.stream_options.include_usage

    def sampling_raw(self) -> dict[str, Any]:
        """The shared fields under the V2 parameter names (absent ones left out)."""
        raw = {
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "repetition_penalty": self.repetition_penalty,
            "seed": self.seed,
            "stop": self.stop,
            "stream_interval": self.stream_interval,
        }
        return {key: value for key, value in raw.items() if value is not None}


class CompletionRequest(Sampling):
    """`POST /v1/completions`."""

    prompt: str
    """A string, or a list holding one string; token-id prompts are refused."""
    max_tokens: int | None = None
    """Absent: the model's default (OpenAI's is 16; ours is the V2 default)."""
    logprobs: int | None = None
    """The chosen token's logprob plus the `logprobs` most likely, in [0, 20]."""

    @model_validator(mode="before")
    @classmethod
    def _neutral(cls, data: Any) -> Any:
        return drop_neutral(data, COMPLETION_NEUTRAL)

    @field_validator("prompt", mode="before")
    @classmethod
    def _one_string(cls, value: Any) -> Any:
        if isinstance(value, list) and len(value) == 1 and isinstance(value[0], str):
            return value[0]
        if isinstance(value, list) and value and not all(isinstance(v, str) for v in value):
            raise invalid("token-id prompts are not supported; send the prompt as text.", "prompt")
        if isinstance(value, list):
            raise invalid(f"prompt must be one string, got a list of {len(value)}.", "prompt")
        return value

    def raw_parameters(self) -> dict[str, Any]:
        """V2 parameter names → values, for `RequestParser.build`."""
        raw = {"max_tokens": self.max_tokens, "logprobs": self.logprobs, **self.sampling_raw()}
        return {key: value for key, value in raw.items() if value is not None}

    def field_names(self) -> dict[str, str]:
        """V2 parameter name → the field the client sent (for error messages)."""
        return {}


class ChatMessage(BaseModel):
    """One message; `name` becomes the speaker where the chat template uses it."""

    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "developer", "user", "assistant"]
    content: str | None = None
    """Text, or a list of text parts (`{"type": "text", "text": ...}`), joined."""
    name: str | None = None

    @field_validator("content", mode="before")
    @classmethod
    def _text_parts(cls, value: Any) -> Any:
        if not isinstance(value, list):
            return value
        texts = []
        for part in value:
            if not (isinstance(part, dict) and part.get("type") == "text"):
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise invalid(
                    f"content parts of type {kind!r} are not supported (text only).",
                    "messages.content",
                )
            texts.append(part.get("text", ""))
        return "".join(texts)

    @model_validator(mode="before")
    @classmethod
    def _neutral(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        return {
            k: v for k, v in data.items() if k not in MESSAGE_NEUTRAL or not MESSAGE_NEUTRAL[k](v)
        }

    def for_template(self) -> dict[str, str]:
        """The message as chat templates expect it: role, content as text, name if given."""
        message = {"role": self.role, "content": self.content or ""}
        return message if self.name is None else {**message, "name": self.name}


class ChatCompletionRequest(Sampling):
    """`POST /v1/chat/completions`."""

    messages: list[ChatMessage]
    max_completion_tokens: int | None = None
    max_tokens: int | None = None
    """OpenAI's deprecated name for max_completion_tokens."""
    logprobs: bool = False
    top_logprobs: int | None = None
    """With `logprobs: true`: the k most likely tokens at each step, in [0, 20]."""
    add_generation_prompt: bool = True
    """vLLM's extension: end the prompt with the assistant's turn (the template's part)."""

    @model_validator(mode="before")
    @classmethod
    def _neutral(cls, data: Any) -> Any:
        return drop_neutral(data, CHAT_NEUTRAL)

    @model_validator(mode="after")
    def _check_chat(self) -> ChatCompletionRequest:
        if not self.messages:
            raise invalid("messages must hold at least one message.", "messages")
        both = self.max_tokens is not None and self.max_completion_tokens is not None
        if both and self.max_tokens != self.max_completion_tokens:
            raise invalid(
                "give max_completion_tokens or max_tokens, not two different values.",
                "max_tokens",
            )
        if self.top_logprobs is not None:
            if not self.logprobs:
                raise invalid("top_logprobs needs logprobs: true.", "top_logprobs")
            checked_range("top_logprobs", self.top_logprobs, 0, MAX_LOGPROBS)
        return self

    def template_messages(self) -> list[dict[str, str]]:
        """The conversation as the chat template takes it."""
        return [message.for_template() for message in self.messages]

    def raw_parameters(self) -> dict[str, Any]:
        """V2 parameter names → values, for `RequestParser.build`."""
        raw = self.sampling_raw()
        max_tokens = self.max_completion_tokens or self.max_tokens
        if max_tokens is not None:
            raw["max_tokens"] = max_tokens
        if self.logprobs:
            raw["logprobs"] = self.top_logprobs or 0
        return raw

    def field_names(self) -> dict[str, str]:
        """V2 parameter name → the field the client sent (for error messages)."""
        sent = "max_completion_tokens" if self.max_completion_tokens is not None else "max_tokens"
        return {"max_tokens": sent, "logprobs": "top_logprobs"}
