"""The OpenAI API over a real `mlserver start model-repo`, through the `openai` SDK (sync and
async, streaming and not) against every text generator, and over raw HTTP chunk by chunk."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import time

import httpx
import openai
import pytest

from .clients import TIMEOUT, LineReader, metric
from .conftest import MODEL_REPO
from .engines import Pause, run_until
from .openai_models import TextModel, text_generators

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

GENERATORS = text_generators(MODEL_REPO)
CHATTY = [m for m in GENERATORS if m.has_chat_template]
CHAT = [{"role": "system", "content": "A platform."}, {"role": "user", "content": "Who's there?"}]


def ids(model: TextModel) -> str:
    return model.name


def sync_client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.http_url + "/v1", api_key="unused", max_retries=0)


def async_client(server) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=server.http_url + "/v1", api_key="unused", max_retries=0)


def test_models_lists_every_text_generator(server):
    listed = [m.id for m in sync_client(server).models.list()]
    assert "shakespeare" in listed and listed == sorted(m.name for m in GENERATORS)


@pytest.mark.parametrize("model", GENERATORS, ids=ids)
def test_sync_completion_unary_and_stream_agree(server, model):
    client = sync_client(server)
    params = {"model": model.name, "prompt": "ROMEO:\n", "max_tokens": 40, "seed": 7}
    unary = client.completions.create(**params)
    assert unary.object == "text_completion" and unary.id.startswith("cmpl-")
    assert unary.choices[0].finish_reason in ("length", "stop")
    assert unary.usage is not None and unary.usage.completion_tokens <= 40
    # The engines run a few ms at a time while the stream is read: its tokens come in
    # several chunks even when this machine is too busy to read each as it comes (a backlog
    # is sent as one chunk).
    with (
        Pause.engines_of(server).held() as engines,
        concurrent.futures.ThreadPoolExecutor(1) as pool,
    ):
        reading = pool.submit(
            lambda: list(
                client.completions.create(
                    **params, stream=True, stream_options={"include_usage": True}
                )
            )
        )
        deadline = time.monotonic() + 60
        while not reading.done():
            assert time.monotonic() < deadline, "the stream did not end"
            engines.step()
            time.sleep(0.02)
    chunks = reading.result()
    *content, usage = chunks
    assert usage.choices == [] and usage.usage == unary.usage
    assert len({c.id for c in chunks}) == 1 and all(c.model == model.name for c in chunks)
    reasons = [c.choices[0].finish_reason for c in content]
    assert reasons[-1] == unary.choices[0].finish_reason and set(reasons[:-1]) <= {None}
    assert "".join(c.choices[0].text for c in content) == unary.choices[0].text
    assert len(content) > 1  # streamed (a backlog of tokens may share a chunk, as on V2)


@pytest.mark.parametrize("model", GENERATORS, ids=ids)
async def test_async_chat_unary_and_stream_agree(server, model):
    client = async_client(server)
    params = {"model": model.name, "messages": CHAT, "max_completion_tokens": 10, "seed": 4}
    if not model.has_chat_template:
        with pytest.raises(openai.BadRequestError, match="has no chat template"):
            await client.chat.completions.create(**params)
        return
    unary = await client.chat.completions.create(**params)
    assert unary.object == "chat.completion" and unary.id.startswith("chatcmpl-")
    message = unary.choices[0].message
    assert message.role == "assistant" and message.content
    stream = await client.chat.completions.create(**params, stream=True)
    chunks = [chunk async for chunk in stream]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == message.content
    assert chunks[-1].choices[0].finish_reason == unary.choices[0].finish_reason


@pytest.mark.parametrize("model", CHATTY, ids=ids)
async def test_n_choices_stream_each_with_its_index_and_end(server, model):
    stream = await async_client(server).chat.completions.create(
        model=model.name,
        messages=CHAT,
        max_tokens=6,
        n=3,
        seed=11,
        stream=True,
        logprobs=True,
        top_logprobs=2,
        extra_body={"top_k": 20, "repetition_penalty": 1.2},
    )
    ends: dict[int, list] = {0: [], 1: [], 2: []}
    async for chunk in stream:
        (choice,) = chunk.choices
        ends[choice.index].append(choice.finish_reason)
        if choice.delta.content:
            assert choice.logprobs is not None
            assert all(len(e.top_logprobs) == 2 for e in choice.logprobs.content)
    for reasons in ends.values():
        assert reasons[-1] == "length" and set(reasons[:-1]) == {None}


def test_sdk_errors_name_the_field(server):
    client = sync_client(server)
    with pytest.raises(openai.BadRequestError) as bad:
        client.completions.create(model="shakespeare", prompt="x", temperature=11)
    assert bad.value.body["param"] == "temperature"
    assert bad.value.body["message"] == "temperature must be in [0, 10], got 11."
    with pytest.raises(openai.NotFoundError, match="'nobody' is not a loaded text generator"):
        client.completions.create(model="nobody", prompt="x")
    with pytest.raises(openai.BadRequestError, match="response_format is not supported"):
        client.chat.completions.create(
            model="shakespeare", messages=CHAT, response_format={"type": "json_object"}
        )


async def test_a_huge_prompt_is_refused_before_it_is_tokenized(server):
    huge = "ROMEO: " * 1_500_000  # 10.5 MB: the model takes 255 tokens of at most 14 bytes
    async with httpx.AsyncClient(base_url=server.http_url, timeout=TIMEOUT) as client:
        completion = await client.post(
            "/v1/completions", json={"model": "shakespeare", "prompt": huge}
        )
        chat = await client.post(
            "/v1/chat/completions",
            json={"model": "shakespeare", "messages": [{"role": "user", "content": huge}]},
        )
        too_big = await client.post("/v1/completions", content=b" " * (17 * 1024 * 1024))
        v2 = await client.post(
            "/v2/models/shakespeare/infer",
            json={
                "inputs": [{"name": "prompt", "shape": [1], "datatype": "BYTES", "data": [huge]}]
            },
        )
    assert completion.status_code == 400 and completion.json()["error"]["param"] == "prompt"
    assert completion.json()["error"]["message"] == (
        f"prompt must be at most 255 tokens; its {len(huge)} characters are more than any "
        "prompt of that many tokens holds (3570)."
    )
    assert chat.status_code == 400 and chat.json()["error"]["param"] == "messages"
    assert too_big.status_code == 413
    assert too_big.json()["error"]["message"] == "the request body must be at most 16777216 bytes."
    assert v2.status_code == 400 and "its 10500000 characters" in v2.json()["error"]


async def test_raw_sse_arrives_chunk_by_chunk(server):
    body = {"model": "shakespeare", "prompt": "ROMEO:\n", "max_tokens": 60, "stream": True}
    arrivals: list[tuple[float, str]] = []

    async def read() -> None:
        async with (
            httpx.AsyncClient(base_url=server.http_url, timeout=TIMEOUT) as client,
            client.stream("POST", "/v1/completions", json=body) as response,
        ):
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            async for line in response.aiter_lines():
                if line:
                    arrivals.append((time.monotonic(), line))

    # The engines run a few ms at a time: tokens come apart even when this machine is too
    # busy to read each as it comes (a backlog is sent as one chunk).
    with Pause.engines_of(server).held() as engines:
        reading = asyncio.ensure_future(read())
        await run_until(engines, reading.done, "the stream's end")
    await reading
    lines = [line for _, line in arrivals]
    assert lines[-1] == "data: [DONE]" and all(line.startswith("data: ") for line in lines)
    events = [json.loads(line[6:]) for line in lines[:-1]]
    assert [e["choices"][0]["finish_reason"] for e in events][-1] in ("length", "stop")
    assert len({t for t, _ in arrivals}) > 5  # many separate arrivals, not one response


async def test_disconnect_cancels_the_sequence_and_openai_is_counted(server):
    cancelled = "mlserver_streaming:request_success_total"
    before = await metric(server, cancelled, finished_reason="cancelled", model_name="shakespeare")
    body = {"model": "shakespeare", "prompt": "ROMEO:\n", "max_tokens": 250, "stream": True}
    running = "mlserver_streaming:num_requests_running"

    async def stopped() -> bool:
        return await metric(server, running, model_name="shakespeare") == 0

    # The engines run a few ms at a time: the sequence is mid-way when the client leaves.
    with Pause.engines_of(server).held() as engines:
        reader = LineReader(server.http_url, "/v1/completions", body)
        await run_until(engines, reader.has_data(3), "three chunks")
        lines = await reader.disconnect()  # closes the connection mid-stream
        await run_until(engines, stopped, "the sequence to stop after the disconnect")
    assert "data: [DONE]" not in lines
    after = await metric(server, cancelled, finished_reason="cancelled", model_name="shakespeare")
    assert after == before + 1


async def test_a_unary_request_whose_client_leaves_is_cancelled(server):
    cancelled = "mlserver_streaming:request_success_total"
    before = await metric(server, cancelled, finished_reason="cancelled", model_name="shakespeare")
    generated = "mlserver_streaming:generation_tokens_total"
    tokens = await metric(server, generated, model_name="shakespeare")
    body = {"model": "shakespeare", "prompt": "ROMEO:\n", "max_tokens": 250}
    running = "mlserver_streaming:num_requests_running"

    async def begun() -> bool:
        return await metric(server, generated, model_name="shakespeare") > tokens

    async def stopped() -> bool:
        return await metric(server, running, model_name="shakespeare") == 0

    async with httpx.AsyncClient(base_url=server.http_url, timeout=TIMEOUT) as client:
        with Pause.engines_of(server).held() as engines:
            waiting = asyncio.create_task(client.post("/v1/completions", json=body))
            await run_until(engines, begun, "the completion's first tokens")
            waiting.cancel()  # the client gives up: its connection closes
            await asyncio.gather(waiting, return_exceptions=True)
            await run_until(engines, stopped, "the sequence to stop after the client left")
    after = await metric(server, cancelled, finished_reason="cancelled", model_name="shakespeare")
    assert after == before + 1


async def test_openai_tokens_are_counted_like_v2(server):
    generated = "mlserver_streaming:generation_tokens_total"
    before = await metric(server, generated, model_name="shakespeare")
    done = "mlserver_streaming:request_success_total"
    ended = await metric(server, done, model_name="shakespeare", finished_reason="length")
    unary = await async_client(server).completions.create(
        model="shakespeare", prompt="ROMEO:\n", max_tokens=9, n=2, seed=1
    )
    assert unary.usage is not None and unary.usage.completion_tokens == 18
    assert await metric(server, generated, model_name="shakespeare") == before + 18
    assert await metric(server, done, model_name="shakespeare", finished_reason="length") == (
        ended + 2
    )
