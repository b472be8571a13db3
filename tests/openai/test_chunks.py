"""Chunk and response builders: ids, objects, finish reasons, usage."""

from __future__ import annotations

import pytest

from mlserver_streaming.events import FinishReason
from mlserver_streaming.openai import chunks
from mlserver_streaming.openai.chunks import Head, openai_finish_reason


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        (FinishReason.EOS, "stop"),
        (FinishReason.STOP, "stop"),
        (FinishReason.LENGTH, "length"),
        (FinishReason.ERROR, None),
        (FinishReason.TIMEOUT, None),
        (FinishReason.CANCELLED, None),
        (None, None),
    ],
)
def test_finish_reasons(ours, theirs):
    assert openai_finish_reason(ours) == theirs


def test_ids_and_objects():
    chat, completion = Head("poet", chat=True), Head("poet", chat=False)
    assert chat.id.startswith("chatcmpl-") and completion.id.startswith("cmpl-")
    assert Head("poet", chat=True).id != chat.id
    assert chunks.chunk(chat, {})["object"] == "chat.completion.chunk"
    assert chunks.chunk(completion, {})["object"] == "text_completion"
    assert chunks.response(chat, [], chunks.usage(1, 2))["object"] == "chat.completion"
    role = chunks.role_chunk(chat, 2)
    assert role["choices"] == [
        {
            "index": 2,
            "delta": {"role": "assistant", "content": ""},
            "logprobs": None,
            "finish_reason": None,
        }
    ]
    assert {k: role[k] for k in ("id", "created", "model")} == {
        "id": chat.id,
        "created": chat.created,
        "model": "poet",
    }


def test_usage_chunk_has_no_choices():
    head = Head("poet", chat=False)
    usage = chunks.usage_chunk(head, chunks.usage(4, 6))
    assert usage["choices"] == [] and usage["usage"] == {
        "prompt_tokens": 4,
        "completion_tokens": 6,
        "total_tokens": 10,
    }
