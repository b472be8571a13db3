"""Logprobs in completions' and chat's shapes, from a delta."""

from __future__ import annotations

from mlserver_streaming.openai.logprobs import TokenStrings, chat_logprobs, completion_logprobs
from mlserver_streaming.text.sample.generation import Delta

VOCAB = {1: "a", 2: "bc", 3: "\ufffd", 4: "\ufffd"}


class Decoder:
    def decode(self, ids):
        return "".join(VOCAB[i] for i in ids)


DELTA = Delta(
    text="abc",
    token_ids=[1, 2],
    logprobs=[-0.5, -1.0],
    top_logprobs=[((1, -0.5), (3, -2.0)), ((2, -1.0), (4, -3.0))],
)


def test_completion_shape_with_running_offsets():
    got = completion_logprobs(TokenStrings(Decoder()), DELTA, top=2, text_offset=5)
    assert got == {
        "tokens": ["a", "bc"],
        "token_logprobs": [-0.5, -1.0],
        "top_logprobs": [{"a": -0.5, "\ufffd": -2.0}, {"bc": -1.0, "\ufffd": -3.0}],
        "text_offset": [5, 6],
    }
    assert completion_logprobs(TokenStrings(Decoder()), DELTA, 0, 0)["top_logprobs"] == [None] * 2


def test_chat_shape_with_bytes():
    (first, second) = chat_logprobs(TokenStrings(Decoder()), DELTA)["content"]
    assert first == {
        "token": "a",
        "logprob": -0.5,
        "bytes": [97],
        "top_logprobs": [
            {"token": "a", "logprob": -0.5, "bytes": [97]},
            {"token": "\ufffd", "logprob": -2.0, "bytes": [239, 191, 189]},
        ],
    }
    assert second["bytes"] == [98, 99]
