"""OpenAI streams on a one-slot server: keep-alives while queued, 429 with Retry-After at
capacity, and an error after the stream began arriving in-band before `[DONE]`."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator

import httpx
import openai
import pytest

from mlserver_streaming.sse import KEEPALIVE_ENV

from .clients import TIMEOUT
from .conftest import MODEL_REPO
from .server import Server, running_server

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

MODEL = "shakespeare"
DEADLINE_S = 0.2  # 250 tokens take >= 0.35 s served here (<= 700 tokens/s at one stream)
KEEPALIVE_S = 0.03


@pytest.fixture(scope="module")
def one_slot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """shakespeare with one running slot, one waiting place, a short deadline and
    keep-alives every 50 ms."""
    repo = tmp_path_factory.mktemp("openai-admission")
    (repo / "settings.json").write_text((MODEL_REPO / "settings.json").read_text())
    settings = json.loads((MODEL_REPO / MODEL / "model-settings.json").read_text())
    settings["parameters"]["uri"] = str((MODEL_REPO / MODEL).resolve())
    settings["parameters"]["extra"].update(
        max_running=1, max_waiting=1, request_timeout_s=DEADLINE_S
    )
    (repo / MODEL).mkdir()
    (repo / MODEL / "model-settings.json").write_text(json.dumps(settings))
    os.environ[KEEPALIVE_ENV] = str(KEEPALIVE_S)  # read by the server we start here
    try:
        with running_server(repo, [MODEL], tmp_path_factory.mktemp("logs")) as server:
            yield server
    finally:
        del os.environ[KEEPALIVE_ENV]


async def raw_stream(server: Server, body: dict) -> list[str]:
    """Every non-empty line of an SSE response, comments included, as sent."""
    async with (
        httpx.AsyncClient(base_url=server.http_url, timeout=TIMEOUT) as client,
        client.stream("POST", "/v1/completions", json={**body, "stream": True}) as response,
    ):
        assert response.status_code == 200
        return [line async for line in response.aiter_lines() if line]


LONG = {"model": MODEL, "prompt": "ROMEO:\n", "max_tokens": 250, "seed": 1}


async def test_past_the_deadline_the_error_arrives_in_band_then_done(one_slot):
    lines = await raw_stream(one_slot, LONG)
    data = [line for line in lines if line.startswith("data: ")]
    assert data[-1] == "data: [DONE]"
    error = json.loads(data[-2][len("data: ") :])["error"]
    assert error["code"] == "timeout" and "deadline" in error["message"]
    assert set(error) == {"message", "type", "param", "code"}
    assert all("choices" in json.loads(line[6:]) for line in data[:-2])  # chunks before it


async def test_the_sdk_raises_the_in_band_error_mid_stream(one_slot):
    client = openai.AsyncOpenAI(base_url=one_slot.http_url + "/v1", api_key="-", max_retries=0)
    received = []
    with pytest.raises(openai.APIError, match="deadline"):
        async for chunk in await client.completions.create(**LONG, stream=True):
            received.append(chunk.choices[0].text)
    assert received  # tokens came first, then the error


async def test_a_queued_stream_gets_keepalives_and_a_full_one_gets_429(one_slot):
    occupant = asyncio.create_task(raw_stream(one_slot, LONG))
    await asyncio.sleep(0.05)
    queued = asyncio.create_task(raw_stream(one_slot, {**LONG, "max_tokens": 2}))
    await asyncio.sleep(0.05)
    client = openai.AsyncOpenAI(base_url=one_slot.http_url + "/v1", api_key="-", max_retries=0)
    with pytest.raises(openai.RateLimitError) as refused:
        await client.completions.create(model=MODEL, prompt="x", max_tokens=2)
    assert refused.value.response.headers["retry-after"] == "1"
    assert refused.value.body["code"] == "server_at_capacity"
    lines = await queued
    await occupant
    first_data = next(i for i, line in enumerate(lines) if line.startswith("data: "))
    assert first_data >= 2 and set(lines[:first_data]) == {": keep-alive"}
    assert lines[-1] == "data: [DONE]"
