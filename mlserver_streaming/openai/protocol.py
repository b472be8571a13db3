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

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, create_model, field_validator, model_validator

from ..errors import InvalidParameter
from ..params import check_range
from ..text.sample.params import MAX_LOGPROBS, optional_fields
from .errors import invalid
from .neutral import CHAT_NEUTRAL, COMPLETION_NEUTRAL, MESSAGE_NEUTRAL, drop_neutral

MAX_N = 16
"""Choices per request at most; each is its own sequence in the batch (and capacity)."""
SAMPLING_FIELDS: tuple[str, ...] = ("temperature", "top_p", "top_k", "repetition_penalty")
SAMPLING_FIELDS += ("seed", "stop", "stream_interval")
"""Generation parameters both endpoints take under their V2 names; their types come from
`GenerationParams` (`optional_fields`), their ranges from the model (`RequestParser`)."""


def checked_range(name: str, value: int, low: int, high: int) -> None:
    """check_range, as a 400 naming the field."""
    try:
        check_range(name, value, low, high)
    except InvalidParameter as err:
        raise invalid(str(err), name) from err


class Strict(BaseModel):
    """Unknown fields fail (pydantic's `extra_forbidden` becomes a 400 naming the field)."""

    model_config = ConfigDict(extra="forbid")

    def sent(self, names: Sequence[str]) -> dict[str, Any]:
        """The named fields the client set (None: absent), under their own names."""
        values = {name: getattr(self, name) for name in names}
        return {name: value for name, value in values.items() if value is not None}


def with_parameters(base: type[Strict], names: Sequence[str]) -> type[Strict]:
    """`base` with the named generation parameters as optional fields."""
    return create_model(f"{base.__name__}With", __base__=base, **optional_fields(names))


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


if TYPE_CHECKING:
    _SamplingFields = Strict
else:
    _SamplingFields = with_parameters(Strict, SAMPLING_FIELDS)


class Sampling(_SamplingFields):
    """The fields both endpoints share; the generation parameters (`SAMPLING_FIELDS`, with
    vLLM's extensions `top_k`, `repetition_penalty` and `stream_interval`) pass to the
    model's parameter parser. Choice i of n samples with seed + i (mod 2**63); without a
    seed each draws its own."""

    model: str
    """The loaded text generator's name."""
    n: int = 1
    """Choices, in [1, MAX_N]; each is its own sequence, submitted together."""
    stream: bool = False
    stream_options: StreamOptions | None = None
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
        return self.sent(SAMPLING_FIELDS)


if TYPE_CHECKING:
    _CompletionFields = Sampling
    _ChatFields = Sampling
else:
    _CompletionFields = with_parameters(Sampling, ("max_tokens", "logprobs"))
    _ChatFields = with_parameters(Sampling, ("max_tokens",))


class CompletionRequest(_CompletionFields):
    """`POST /v1/completions`. `max_tokens` absent: the model's default (OpenAI's is 16;
    ours is the V2 default); `logprobs`: the chosen token's logprob plus that many of the
    most likely, in [0, 20]."""

    prompt: str
    """A string, or a list holding one string; token-id prompts are refused."""

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
        return {**self.sent(("max_tokens", "logprobs")), **self.sampling_raw()}

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


class ChatCompletionRequest(_ChatFields):
    """`POST /v1/chat/completions` (`max_tokens`: OpenAI's deprecated name for
    `max_completion_tokens`)."""

    messages: list[ChatMessage]
    max_completion_tokens: int | None = None
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
        max_tokens = self.sent(("max_tokens",)).get("max_tokens")
        both = max_tokens is not None and self.max_completion_tokens is not None
        if both and max_tokens != self.max_completion_tokens:
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
        max_tokens = self.max_completion_tokens or self.sent(("max_tokens",)).get("max_tokens")
        if max_tokens is not None:
            raw["max_tokens"] = max_tokens
        if self.logprobs:
            raw["logprobs"] = self.top_logprobs or 0
        return raw

    def field_names(self) -> dict[str, str]:
        """V2 parameter name → the field the client sent (for error messages)."""
        sent = "max_completion_tokens" if self.max_completion_tokens is not None else "max_tokens"
        return {"max_tokens": sent, "logprobs": "top_logprobs"}
