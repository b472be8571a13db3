"""The OpenAI routes in-process: real text generators (engine on a thread) behind a FastAPI
app built from one model's custom handlers, as MLServer builds it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from mlserver.handlers import get_custom_handlers
from mlserver.metrics import REGISTRY
from mlserver.settings import ModelParameters, ModelSettings

from mlserver_streaming.text.drivers.metrics import GENERATION_TOKENS
from mlserver_streaming.text.loaded import TEXT_GENERATORS
from mlserver_streaming.text.runtime import TextGenerator

SHAKESPEARE = Path(__file__).parents[2] / "model-repo" / "shakespeare"

pytestmark = pytest.mark.timeout(120)


def generator(name: str, uri: Path, **extra) -> TextGenerator:
    extra = {"engine_process": False, "max_running": 4, "warmup_tokens": 1, **extra}
    params = ModelParameters(uri=str(uri), version="v1", extra=extra)
    return TextGenerator(ModelSettings(name=name, implementation=TextGenerator, parameters=params))


@pytest.fixture(scope="module")
async def models(tmp_path_factory) -> AsyncIterator[dict[str, TextGenerator]]:
    """`poet` (shakespeare, with its chat template) and `critic` (the same weights, no
    tokenizer_config.json, so no chat template)."""
    bare = tmp_path_factory.mktemp("no-template")
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        (bare / name).symlink_to((SHAKESPEARE / name).resolve())
    poet = generator("poet", SHAKESPEARE, defaults={"max_tokens": 8})
    critic = generator("critic", bare, max_waiting=0, max_running=1)
    for model in (poet, critic):
        assert await model.load()
    yield {"poet": poet, "critic": critic}
    for model in (poet, critic):
        await model.unload()


def app_of(model: TextGenerator) -> FastAPI:
    app = FastAPI()
    for handler, method in get_custom_handlers(model):
        app.add_api_route(handler.rest_path, method, methods=[handler.rest_method])
    return app


@pytest.fixture
async def client(models) -> AsyncIterator[httpx.AsyncClient]:
    """A client of critic's routes only: every answer for poet proves dispatch by `model`."""
    transport = httpx.ASGITransport(app_of(models["critic"]))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http


def sse_data(text: str) -> list[str]:
    return [line[len("data: ") :] for line in text.split("\n\n") if line.startswith("data: ")]


async def test_models_lists_every_loaded_generator(client):
    body = (await client.get("/v1/models")).json()
    assert body["object"] == "list"
    assert [(m["id"], m["object"], m["max_model_len"]) for m in body["data"]] == [
        ("critic", "model", 256),
        ("poet", "model", 256),
    ]


async def test_completion_unary_uses_the_model_defaults_and_reports_usage(client):
    response = await client.post("/v1/completions", json={"model": "poet", "prompt": "ROMEO:\n"})
    body = response.json()
    assert response.status_code == 200 and body["object"] == "text_completion"
    assert body["id"].startswith("cmpl-") and body["model"] == "poet"
    (choice,) = body["choices"]
    assert choice["index"] == 0 and choice["finish_reason"] == "length"
    # poet's V2 default max_tokens is 8; "ROMEO:\n" is 3 tokens (no bos in these settings)
    assert body["usage"] == {"prompt_tokens": 3, "completion_tokens": 8, "total_tokens": 11}


async def test_streamed_chunks_join_to_the_unary_text_with_n_choices(client):
    request = {"model": "poet", "prompt": "ROMEO:\n", "max_tokens": 6, "seed": 5, "n": 3}
    unary = (await client.post("/v1/completions", json=request)).json()
    single = (await client.post("/v1/completions", json={**request, "n": 1})).json()
    streamed = await client.post(
        "/v1/completions",
        json={**request, "stream": True, "stream_options": {"include_usage": True}},
    )
    assert streamed.headers["content-type"].startswith("text/event-stream")
    data = sse_data(streamed.text)
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    *content, usage = chunks
    assert usage["choices"] == [] and usage["usage"] == unary["usage"]
    assert len({c["id"] for c in chunks}) == 1 and {c["object"] for c in chunks} == {
        "text_completion"
    }
    texts = {i: "" for i in range(3)}
    for chunk in content:
        (choice,) = chunk["choices"]
        texts[choice["index"]] += choice["text"]
    for index in range(3):
        reasons = [
            c["choices"][0]["finish_reason"] for c in content if c["choices"][0]["index"] == index
        ]
        assert reasons[-1] == "length" and set(reasons[:-1]) <= {None}
    assert [texts[i] for i in range(3)] == [c["text"] for c in unary["choices"]]
    assert unary["choices"][0]["text"] == single["choices"][0]["text"]  # choice 0: the seed
    assert len({c["text"] for c in unary["choices"]}) > 1  # the others: seed + i
    assert unary["usage"]["completion_tokens"] == 18 and unary["usage"]["prompt_tokens"] == 3


async def test_chat_renders_the_template_and_streams_role_first(client, models):
    messages = [{"role": "user", "content": "Who's there?", "name": "bernardo"}]
    request = {"model": "poet", "messages": messages, "max_completion_tokens": 5, "seed": 2}
    unary = (await client.post("/v1/chat/completions", json=request)).json()
    (choice,) = unary["choices"]
    assert unary["object"] == "chat.completion" and unary["id"].startswith("chatcmpl-")
    assert choice["message"]["role"] == "assistant" and choice["finish_reason"] == "length"
    prompt = "BERNARDO:\nWho's there?\n\nHORATIO:\n"
    assert unary["usage"]["prompt_tokens"] == len(models["poet"].requests.tokenizer.encode(prompt))
    streamed = await client.post("/v1/chat/completions", json={**request, "stream": True})
    chunks = [json.loads(d) for d in sse_data(streamed.text)[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == choice["message"]["content"]
    assert [c["choices"][0]["finish_reason"] for c in chunks][-1] == "length"


async def test_logprobs_in_both_shapes(client, models):
    decode = models["poet"].requests.tokenizer.decode
    completion = await client.post(
        "/v1/completions",
        json={"model": "poet", "prompt": "ROMEO:\n", "max_tokens": 4, "logprobs": 2},
    )
    logprobs = completion.json()["choices"][0]["logprobs"]
    assert len(logprobs["tokens"]) == 4 and all(len(t) == 2 for t in logprobs["top_logprobs"])
    assert logprobs["text_offset"][0] == 0
    assert logprobs["text_offset"][1] == len(logprobs["tokens"][0])
    chat = await client.post(
        "/v1/chat/completions",
        json={
            "model": "poet",
            "messages": [{"role": "user", "content": "Speak."}],
            "max_tokens": 3,
            "logprobs": True,
            "top_logprobs": 3,
        },
    )
    content = chat.json()["choices"][0]["logprobs"]["content"]
    assert len(content) == 3 and all(len(e["top_logprobs"]) == 3 for e in content)
    first = content[0]
    assert first["bytes"] == list(first["token"].encode()) and first["logprob"] <= 0
    top_token_ids = models["poet"].requests.tokenizer.encode(first["top_logprobs"][0]["token"])
    assert decode(top_token_ids) == first["top_logprobs"][0]["token"]


@pytest.mark.parametrize(
    ("path", "body", "status", "param", "message"),
    [
        ("/v1/completions", {"model": "nope", "prompt": "x"}, 404, "model", "'nope' is not"),
        (
            "/v1/completions",
            {"model": "poet", "prompt": "x", "top_p": 1.5},
            400,
            "top_p",
            "top_p must be in (0, 1], got 1.5.",
        ),
        (
            "/v1/completions",
            {"model": "poet", "prompt": "x", "max_tokens": 999},
            400,
            "max_tokens",
            "max_tokens must be in [1, 256], got 999.",
        ),
        (
            "/v1/completions",
            {"model": "poet", "prompt": "x", "echo": True},
            400,
            "echo",
            "echo is not supported",
        ),
        (
            "/v1/completions",
            {"model": "poet", "prompt": "x", "frobnicate": 1},
            400,
            "frobnicate",
            "unsupported field 'frobnicate'",
        ),
        (
            "/v1/chat/completions",
            {
                "model": "poet",
                "messages": [{"role": "user", "content": "x"}],
                "top_logprobs": 99,
                "logprobs": True,
            },
            400,
            "top_logprobs",
            "top_logprobs must be in [0, 20]",
        ),
        (
            "/v1/chat/completions",
            {"model": "critic", "messages": [{"role": "user", "content": "x"}]},
            400,
            "model",
            "has no chat template",
        ),
        (
            "/v1/chat/completions",
            {
                "model": "poet",
                "messages": [{"role": "user", "content": "x"}],
                "tools": [{"type": "function", "function": {"name": "f"}}],
            },
            400,
            "tools",
            "tools is not supported",
        ),
    ],
)
async def test_errors_have_openai_shape_and_name_the_field(
    client, path, body, status, param, message
):
    response = await client.post(path, json=body)
    error = response.json()["error"]
    assert response.status_code == status and error["param"] == param
    assert message in error["message"] and set(error) == {"message", "type", "param", "code"}


async def test_not_json_is_a_400(client):
    response = await client.post("/v1/completions", content=b"{not json")
    assert response.status_code == 400 and "not valid JSON" in response.json()["error"]["message"]


async def test_at_capacity_is_a_429_with_retry_after_and_n_is_all_or_nothing(client, models):
    # critic: one running slot, no waiting: n=2 cannot fit, and its first choice is cancelled.
    body = {"model": "critic", "prompt": "ROMEO:\n", "max_tokens": 4, "n": 2}
    response = await client.post("/v1/completions", json=body)
    assert response.status_code == 429 and response.headers["retry-after"] == "1"
    assert response.json()["error"]["code"] == "server_at_capacity"
    inflight = models["critic"].backend.client.inflight
    async with asyncio.timeout(60):  # the engine confirms the cancel of the first choice
        while inflight:  # within a step (generous: a step can be slow on a busy machine)
            await asyncio.sleep(0.01)
    ok = await client.post("/v1/completions", json={**body, "n": 1})
    assert ok.status_code == 200


async def test_openai_requests_are_counted_like_v2(client):
    labels = {"model_name": "poet", "model_version": "v1"}
    before = REGISTRY.get_sample_value(GENERATION_TOKENS + "_total", labels) or 0.0
    body = {"model": "poet", "prompt": "ROMEO:\n", "max_tokens": 5, "n": 2}
    usage = (await client.post("/v1/completions", json=body)).json()["usage"]
    after = REGISTRY.get_sample_value(GENERATION_TOKENS + "_total", labels)
    assert usage["completion_tokens"] == 10 and after == before + 10


async def test_an_unloaded_model_leaves_the_registry_and_the_others_stay():
    extra = generator("passing", SHAKESPEARE)
    assert await extra.load()
    assert TEXT_GENERATORS.get("passing") is extra
    await extra.unload()
    assert TEXT_GENERATORS.get("passing") is None and TEXT_GENERATORS.get("poet") is not None
