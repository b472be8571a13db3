"""Prompt limits: what fits in the context window, and what is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlserver_streaming.errors import InvalidInput, InvalidParameter
from mlserver_streaming.text.model_folder import open_model_folder
from mlserver_streaming.text.prompt import PromptLimits, encode_prompt
from mlserver_streaming.text.sample.params import GenerationParams
from mlserver_streaming.text.settings import TextGenerationSettings

REPO = Path(__file__).parents[2] / "model-repo"
SHAKESPEARE_TEXT = (
    "ROMEO:\nBut, soft! what light through yonder window breaks?\nIt is the east, and Juliet "
    "is the sun.\nArise, fair sun, and kill the envious moon,\nWho is already sick and pale "
    "with grief,\nThat thou her maid art far more fair than she: \u00e9\u00e8 \u2014 done.\n"
)

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


class NeverCalled:
    """A tokenizer a refused prompt must never reach."""

    max_token_bytes = 4

    def encode(self, text: str) -> list[int]:
        raise AssertionError("a prompt past the character bound was tokenized")


def test_a_prompt_longer_than_any_of_the_limit_is_refused_untokenized() -> None:
    limits = PromptLimits(max_prompt_tokens=90, max_total_tokens=100, max_prompt_chars=360)
    with pytest.raises(InvalidInput) as info:
        encode_prompt(NeverCalled(), "x" * 361, limits)  # type: ignore[arg-type]
    assert str(info.value) == (
        "input 'prompt' must be at most 90 tokens; its 361 characters are more than any "
        "prompt of that many tokens holds (360)."
    )


@pytest.mark.parametrize("folder", ["shakespeare", "shakespeare-gguf/f16"])
def test_no_token_is_longer_than_the_tokenizers_bound(folder: str) -> None:
    tokenizer = open_model_folder(REPO / folder, TextGenerationSettings(), "poet").tokenizer()
    bound = tokenizer.max_token_bytes
    ids = tokenizer.encode(SHAKESPEARE_TEXT)
    assert len(ids) > 50 and bound >= 2
    assert max(len(tokenizer.decode([i]).encode()) for i in ids) <= bound
    # so a prompt of n tokens is never refused for its length in characters:
    limits = PromptLimits.from_settings(
        TextGenerationSettings(), "poet", 4096, max_token_bytes=bound
    )
    assert limits.max_prompt_chars == limits.max_prompt_tokens * bound
    assert len(SHAKESPEARE_TEXT) <= len(ids) * bound
