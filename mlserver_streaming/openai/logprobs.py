"""A delta's logprobs in OpenAI's two shapes: completions' lists and chat's `content` entries.

Token strings are each token decoded alone (a byte-level token that is part of a multi-byte
character decodes to U+FFFD, as in vLLM); chat's `bytes` are that string's UTF-8 bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from ..text.sample.generation import Delta
from ..text.tokenizer import Decoder


class TokenStrings:
    """Token id → its text, cached (the same few thousand ids recur in every stream)."""

    def __init__(self, decoder: Decoder, cache_size: int = 65536) -> None:
        self._text = lru_cache(maxsize=cache_size)(lambda token: decoder.decode([token]))

    def __call__(self, token: int) -> str:
        return self._text(token)


def completion_logprobs(
    strings: TokenStrings, delta: Delta, top: int, text_offset: int
) -> dict[str, Any]:
    """`{tokens, token_logprobs, top_logprobs, text_offset}` for the delta's tokens;
    offsets count characters of the token strings from `text_offset` on."""
    tokens = [strings(t) for t in delta.token_ids]
    offsets = []
    for text in tokens:
        offsets.append(text_offset)
        text_offset += len(text)
    return {
        "tokens": tokens,
        "token_logprobs": list(delta.logprobs),
        "top_logprobs": [_top_dict(strings, alts) if top else None for alts in delta.top_logprobs],
        "text_offset": offsets,
    }


def _top_dict(strings: TokenStrings, alternatives: Sequence[tuple[int, float]]) -> dict:
    # Two ids may decode to one string (both U+FFFD): the likelier one is kept.
    out: dict[str, float] = {}
    for token, logprob in alternatives:
        out.setdefault(strings(token), logprob)
    return out


def chat_logprobs(strings: TokenStrings, delta: Delta) -> dict[str, Any]:
    """`{"content": [{token, logprob, bytes, top_logprobs: [...]}, ...]}` for the delta."""
    content = []
    for token, logprob, alternatives in zip(
        delta.token_ids, delta.logprobs, delta.top_logprobs, strict=True
    ):
        entry = _chat_entry(strings(token), logprob)
        entry["top_logprobs"] = [_chat_entry(strings(t), lp) for t, lp in alternatives]
        content.append(entry)
    return {"content": content}


def _chat_entry(text: str, logprob: float) -> dict[str, Any]:
    return {"token": text, "logprob": logprob, "bytes": list(text.encode("utf-8"))}


def text_length(strings: TokenStrings, delta: Delta) -> int:
    """Characters the delta's token strings add (where the next text offset starts)."""
    return sum(len(strings(t)) for t in delta.token_ids)
