"""Deltas → V2 response outputs and parameters (the wire format of text generation)."""

from __future__ import annotations

from typing import Protocol

import numpy as np
from mlserver.types import ResponseOutput

from ..events import ERROR, ERROR_RETRYABLE, ParamValue
from ..tensors import encode_array, encode_ints, encode_text
from .sample.generation import Delta

OUTPUT_TEXT = "text"
OUTPUT_TOKEN_IDS = "token_ids"
OUTPUT_LOGPROBS = "logprobs"
OUTPUT_TOP_TOKEN_IDS = "top_token_ids"
OUTPUT_TOP_LOGPROBS = "top_logprobs"

PROMPT_TOKENS = "prompt_tokens"
COMPLETION_TOKENS = "completion_tokens"
SEED = "seed"


def delta_outputs(delta: Delta, logprobs: int | None) -> list[ResponseOutput]:
    """`text` and `token_ids`, plus logprob tensors when the request asked for them."""
    outputs = [
        encode_text(OUTPUT_TEXT, delta.text),
        encode_ints(OUTPUT_TOKEN_IDS, delta.token_ids),
    ]
    if logprobs is None:
        return outputs
    n = len(delta.token_ids)
    top_ids = np.full((n, logprobs), -1, dtype=np.int64)
    top_lps = np.full((n, logprobs), -np.inf, dtype=np.float32)
    for row, alternatives in enumerate(delta.top_logprobs):
        for col, (token, logprob) in enumerate(alternatives):
            top_ids[row, col], top_lps[row, col] = token, logprob
    outputs.append(encode_array(OUTPUT_LOGPROBS, np.asarray(delta.logprobs, dtype=np.float32)))
    if logprobs > 0:
        outputs.append(encode_array(OUTPUT_TOP_TOKEN_IDS, top_ids))
        outputs.append(encode_array(OUTPUT_TOP_LOGPROBS, top_lps))
    return outputs


class Usage(Protocol):
    """What the final event reports of a request (a `RequestRecord`, a worker's job)."""

    @property
    def prompt_tokens(self) -> int: ...
    @property
    def completion_tokens(self) -> int: ...
    @property
    def seed(self) -> int: ...


def final_parameters(record: Usage, delta: Delta) -> dict[str, ParamValue]:
    """Usage and the seed used (so a sampled completion can be replayed), plus any error."""
    params: dict[str, ParamValue] = {
        PROMPT_TOKENS: record.prompt_tokens,
        COMPLETION_TOKENS: record.completion_tokens,
        SEED: str(record.seed),  # a string: a 63-bit seed is exact in any JSON client
    }
    if delta.error is not None:
        params[ERROR] = delta.error
        params[ERROR_RETRYABLE] = delta.retryable
    return params
