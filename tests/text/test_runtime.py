"""The text runtime in-process (engine on a thread): V2 requests in, the stream contract out."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from mlserver.settings import ModelParameters, ModelSettings
from mlserver.types import InferenceRequest, InferenceResponse

from mlserver_streaming.errors import InvalidParameter, InvalidSettings
from mlserver_streaming.events import ERROR, FINAL, FINISH_REASON, REQUEST_INDEX
from mlserver_streaming.text.responses import COMPLETION_TOKENS, PROMPT_TOKENS, SEED
from mlserver_streaming.text.runtime import TextGenerator

SHAKESPEARE = Path(__file__).parents[2] / "model-repo" / "shakespeare"

pytestmark = pytest.mark.timeout(60)


def settings(name: str = "poet", **extra) -> ModelSettings:
    extra = {"engine_process": False, "max_running": 4, "warmup_tokens": 1, **extra}
    return ModelSettings(
        name=name,
        implementation=TextGenerator,
        parameters=ModelParameters(uri=str(SHAKESPEARE), version="v1", extra=extra),
    )


@pytest.fixture(scope="module")
async def model() -> AsyncIterator[TextGenerator]:
    runtime = TextGenerator(settings(defaults={"max_tokens": 8}))
    assert await runtime.load()
    yield runtime
    await runtime.unload()


def request(prompt: str = "ROMEO:", **params) -> InferenceRequest:
    tensor = {"name": "prompt", "datatype": "BYTES", "shape": [1], "data": [prompt]}
    return InferenceRequest(inputs=[tensor], parameters=params or None)


def params_of(response: InferenceResponse) -> dict:
    return response.parameters.model_dump(exclude_none=True) if response.parameters else {}


def text_of(response: InferenceResponse) -> str:
    value = response.outputs[0].data.root[0]
    return value.decode() if isinstance(value, bytes) else value


async def stream(model: TextGenerator, *requests: InferenceRequest) -> list[InferenceResponse]:
    async def payloads() -> AsyncIterator[InferenceRequest]:
        for item in requests:
            yield item

    return [r async for r in model.predict_stream(payloads())]


async def test_unary_and_stream_give_the_same_seeded_text(model):
    unary = await model.predict(request(seed=3, temperature=0.9))
    events = await stream(model, request(seed=3, temperature=0.9))
    final = params_of(events[-1])
    assert [params_of(e).get(FINAL, False) for e in events] == [False] * (len(events) - 1) + [True]
    assert "".join(text_of(e) for e in events) == text_of(unary)
    assert final[FINISH_REASON] == params_of(unary)[FINISH_REASON] == "length"
    assert final[COMPLETION_TOKENS] == 8 and final[PROMPT_TOKENS] > 0 and final[SEED] == "3"


async def test_each_request_of_a_stream_ends_on_its_own_and_errors_become_events(model):
    events = await stream(model, request(max_tokens=2), request(top_p=2), request(max_tokens=3))
    finals = [params_of(e) for e in events if params_of(e).get(FINAL)]
    assert [(p[REQUEST_INDEX], p[FINISH_REASON]) for p in finals] == [
        (0, "length"),
        (1, "error"),
        (2, "length"),
    ]
    assert finals[1][ERROR] == "top_p must be in (0, 1], got 2."
    assert [p[COMPLETION_TOKENS] for p in (finals[0], finals[2])] == [2, 3]


async def test_a_bad_request_fails_unary_before_anything_runs(model):
    with pytest.raises(InvalidParameter, match="unknown parameter 'temprature'"):
        await model.predict(request(temprature=0.5))


async def test_a_bad_default_fails_the_load():
    runtime = TextGenerator(settings(defaults={"top_k": -1}))
    with pytest.raises(InvalidSettings, match=r"model 'poet': parameters.extra.defaults.top_k"):
        await runtime.load()
    await runtime.unload()


async def test_a_llama_architecture_gguf_loads_streams_and_stops(tmp_path):
    """A non-GPT-2 model, chosen by its .gguf file, in the engine process: it streams, and
    a stop sequence taken from its own greedy text ends it, unsent, with `stop`."""
    pytest.importorskip("llama_cpp", reason="GGUF models need the llama extra")
    from tests.gguf_fixtures import write_tiny_llama

    path = write_tiny_llama(tmp_path / "tiny-llama.gguf")
    runtime = TextGenerator(
        ModelSettings(
            name="tiny-llama",
            implementation=TextGenerator,
            parameters=ModelParameters(
                uri=str(path), extra={"max_running": 4, "warmup_tokens": 1, "threads": 1}
            ),
        )
    )
    assert await runtime.load()
    try:
        greedy = {"temperature": 0, "max_tokens": 24}
        whole = text_of(await runtime.predict(request("the hello", **greedy)))
        assert len(whole) >= 6
        stop = whole[3:6]
        events = await stream(runtime, request("the hello", stop=stop, **greedy))
        final = params_of(events[-1])
        text = "".join(text_of(e) for e in events)
        assert final[FINISH_REASON] == "stop" and final[PROMPT_TOKENS] > 0
        assert text == whole[: whole.index(stop)] and stop not in text
        assert len(events) >= 2  # it streamed before it stopped
    finally:
        await runtime.unload()
