"""Prompt limits: what fits in the context window, and what is refused."""

from __future__ import annotations

import pytest

from mlserver_streaming.errors import InvalidParameter
from mlserver_streaming.text.prompt import PromptLimits
from mlserver_streaming.text.sample.params import GenerationParams

LIMITS = PromptLimits(max_prompt_tokens=90, max_total_tokens=100)


def test_max_tokens_that_fits_is_kept() -> None:
    params = GenerationParams(max_tokens=60, seed=1)
    assert LIMITS.fit(params, prompt_tokens=40, explicit=True) is params


def test_an_explicit_max_tokens_past_the_context_is_refused() -> None:
    with pytest.raises(InvalidParameter) as info:
        LIMITS.fit(GenerationParams(max_tokens=61, seed=1), prompt_tokens=40, explicit=True)
    assert str(info.value) == (
        "max_tokens must be <= 60 for this prompt (40 prompt tokens, max_total_tokens=100), got 61."
    )


def test_a_default_max_tokens_is_shortened_to_fit() -> None:
    params = LIMITS.fit(GenerationParams(max_tokens=61, seed=1), prompt_tokens=40, explicit=False)
    assert params.max_tokens == 60 and params.seed == 1
