"""OpenAI response objects and stream chunks, built by small functions (as vLLM's server).

Every chunk of one response shares its `id` (`cmpl-…` / `chatcmpl-…`), `created` and
`model`. A choice's `finish_reason` is null on every chunk but its last. Our finish reasons
map to OpenAI's: `eos` and `stop` → "stop", `length` → "length"; `error`, `timeout` and
`cancelled` are not finishes in OpenAI's sense and become errors (see errors.py).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from ..events import FinishReason

COMPLETION = "text_completion"
CHAT = "chat.completion"
CHAT_CHUNK = "chat.completion.chunk"
ASSISTANT = "assistant"

OPENAI_FINISH_REASONS = {
    FinishReason.EOS: "stop",
    FinishReason.STOP: "stop",
    FinishReason.LENGTH: "length",
}


def openai_finish_reason(reason: FinishReason | None) -> str | None:
    """OpenAI's finish_reason for ours (None while running, and for error-like ends)."""
    return None if reason is None else OPENAI_FINISH_REASONS.get(reason)


@dataclass(frozen=True)
class Head:
    """What every object of one response shares."""

    model: str
    chat: bool
    id: str = ""
    created: int = field(default_factory=lambda: int(time.time()))

    def __post_init__(self) -> None:
        if not self.id:
            prefix = "chatcmpl-" if self.chat else "cmpl-"
            object.__setattr__(self, "id", prefix + uuid.uuid4().hex)

    def fields(self, obj: str) -> dict[str, Any]:
        """id, object, created, model."""
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model}


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    """OpenAI's `usage`: the prompt counted once, the completions of every choice summed."""
    total = prompt_tokens + completion_tokens
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": total,
    }


def completion_choice(
    index: int, text: str, logprobs: dict | None, finish_reason: str | None
) -> dict[str, Any]:
    """One choice of a completion (unary or chunk: the same shape)."""
    return {"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish_reason}


def chat_delta_choice(
    index: int, delta: dict[str, str], logprobs: dict | None, finish_reason: str | None
) -> dict[str, Any]:
    """One choice of a chat chunk: `delta` holds the role (first chunk) and/or new content."""
    return {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish_reason}


def chat_message_choice(
    index: int, content: str, logprobs: dict | None, finish_reason: str | None
) -> dict[str, Any]:
    """One choice of a unary chat completion."""
    message = {"role": ASSISTANT, "content": content}
    return {
        "index": index,
        "message": message,
        "logprobs": logprobs,
        "finish_reason": finish_reason,
    }


def role_chunk(head: Head, index: int) -> dict[str, Any]:
    """A chat choice's first chunk: the assistant's role, no content yet."""
    choice = chat_delta_choice(index, {"role": ASSISTANT, "content": ""}, None, None)
    return chunk(head, choice)


def chunk(head: Head, choice: dict[str, Any]) -> dict[str, Any]:
    """A stream chunk carrying one choice's news."""
    return {**head.fields(CHAT_CHUNK if head.chat else COMPLETION), "choices": [choice]}


def usage_chunk(head: Head, counts: dict[str, int]) -> dict[str, Any]:
    """`stream_options.include_usage`'s last chunk: usage and no choices."""
    obj = CHAT_CHUNK if head.chat else COMPLETION
    return {**head.fields(obj), "choices": [], "usage": counts}


def response(head: Head, choices: list[dict[str, Any]], counts: dict[str, int]) -> dict[str, Any]:
    """A unary completion or chat completion."""
    obj = CHAT if head.chat else COMPLETION
    return {**head.fields(obj), "choices": choices, "usage": counts}


def model_card(name: str, created: int, max_model_len: int) -> dict[str, Any]:
    """One entry of `GET /v1/models`."""
    return {
        "id": name,
        "object": "model",
        "created": created,
        "owned_by": "mlserver-streaming",
        "max_model_len": max_model_len,
    }
