"""The word-streaming model in-process: its word limit, settings and refusals."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from mlserver.codecs import StringCodec
from mlserver.settings import ModelParameters, ModelSettings
from mlserver.types import InferenceRequest, InferenceResponse

from mlserver_streaming.errors import InvalidInput, InvalidSettings
from mlserver_streaming.events import ERROR, FINAL, FINISH_REASON
from mlserver_streaming.words import (
    INPUT_PROMPT,
    WordStreamModel,
    WordStreamSettings,
    decode_prompt,
    split_words,
)


def prompt_request(text: str) -> InferenceRequest:
    tensor = {"name": INPUT_PROMPT, "datatype": "BYTES", "shape": [1], "data": [text]}
    return InferenceRequest.model_validate({"inputs": [tensor]})


def settings(**extra) -> ModelSettings:
    return ModelSettings(
        name="words", implementation=WordStreamModel, parameters=ModelParameters(extra=extra)
    )


async def one(request: InferenceRequest) -> AsyncIterator[InferenceRequest]:
    yield request


def params(response: InferenceResponse) -> dict:
    return response.parameters.model_dump(exclude_none=True) if response.parameters else {}


def test_split_words_keeps_the_spaces():
    assert split_words("to be  or") == ["to", " be", " ", " or"]
    assert "".join(split_words("to be  or")) == "to be  or"


def test_a_prompt_at_the_limit_passes():
    assert decode_prompt(prompt_request("a b c"), max_words=3) == "a b c"


def test_a_prompt_past_the_limit_is_refused_naming_input_limit_and_count():
    with pytest.raises(InvalidInput) as info:
        decode_prompt(prompt_request("a b c d"), max_words=3)
    assert str(info.value) == "input 'prompt' must hold at most 3 words (max_words), got 4."
    assert info.value.status_code == 400


def test_max_words_defaults_to_a_thousand_and_is_bounded():
    assert WordStreamSettings().max_words == 1000
    for bad in (0, 1_000_001):
        with pytest.raises(ValueError, match="max_words"):
            WordStreamSettings(max_words=bad)


async def test_a_bad_max_words_fails_the_load():
    with pytest.raises(InvalidSettings, match="model 'words': .*max_words"):
        await WordStreamModel(settings(max_words=0)).load()


async def test_a_long_prompt_streams_only_its_error_event():
    model = WordStreamModel(settings(delay_seconds=0, max_words=2))
    await model.load()
    events = [e async for e in model.predict_stream(one(prompt_request("a b c")))]
    assert len(events) == 1
    final = params(events[0])
    assert final[FINAL] is True and final[FINISH_REASON] == "error"
    assert "input 'prompt' must hold at most 2 words (max_words), got 3." in final[ERROR]


async def test_a_long_prompt_is_refused_by_predict():
    model = WordStreamModel(settings(delay_seconds=0, max_words=2))
    await model.load()
    with pytest.raises(InvalidInput, match="at most 2 words"):
        await model.predict(prompt_request("a b c"))
    response = await model.predict(prompt_request("a b"))
    assert StringCodec.decode_output(response.outputs[0]) == ["a b"]
