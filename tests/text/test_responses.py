"""Deltas → V2 outputs: merging a completion, and logprob tensors padded to a rectangle."""

from __future__ import annotations

import numpy as np

from mlserver_streaming.events import FinishReason
from mlserver_streaming.text.responses import (
    OUTPUT_LOGPROBS,
    OUTPUT_TEXT,
    OUTPUT_TOKEN_IDS,
    OUTPUT_TOP_LOGPROBS,
    OUTPUT_TOP_TOKEN_IDS,
    delta_outputs,
)
from mlserver_streaming.text.sample.generation import Delta, merge


def test_merge_concatenates_and_keeps_the_last_finish() -> None:
    whole = merge(
        [
            Delta("To", [1], [-0.1], [((1, -0.1),)]),
            Delta(" be", [2, 3], [-0.2, -0.3], [((2, -0.2),), ((3, -0.3),)]),
            Delta("", [], finish_reason=FinishReason.TIMEOUT, error="late"),
        ]
    )
    assert (whole.text, whole.token_ids, whole.logprobs) == ("To be", [1, 2, 3], [-0.1, -0.2, -0.3])
    assert len(whole.top_logprobs) == 3
    assert (whole.finish_reason, whole.error) == (FinishReason.TIMEOUT, "late")


def test_top_logprobs_are_padded_with_minus_one_and_minus_inf() -> None:
    delta = Delta("ab", [5, 6], [-0.5, -0.7], [((5, -0.5), (9, -1.5)), ((6, -0.7),)])
    outputs = {o.name: o for o in delta_outputs(delta, logprobs=2)}
    assert list(outputs) == [
        OUTPUT_TEXT,
        OUTPUT_TOKEN_IDS,
        OUTPUT_LOGPROBS,
        OUTPUT_TOP_TOKEN_IDS,
        OUTPUT_TOP_LOGPROBS,
    ]
    ids = outputs[OUTPUT_TOP_TOKEN_IDS]
    lps = outputs[OUTPUT_TOP_LOGPROBS]
    assert ids.shape == lps.shape == [2, 2]
    assert list(ids.data.root) == [5, 9, 6, -1]
    assert np.allclose(np.asarray(lps.data.root[:3], dtype=np.float32), [-0.5, -1.5, -0.7])
    assert lps.data.root[3] == -np.inf


def test_logprobs_zero_sends_only_the_chosen_tokens_logprob() -> None:
    outputs = delta_outputs(Delta("a", [5], [-0.5], [()]), logprobs=0)
    assert [o.name for o in outputs] == [OUTPUT_TEXT, OUTPUT_TOKEN_IDS, OUTPUT_LOGPROBS]
    assert [o.name for o in delta_outputs(Delta("a", [5]), None)] == [OUTPUT_TEXT, OUTPUT_TOKEN_IDS]
