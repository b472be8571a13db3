"""OpenAI streams on a one-slot server: keep-alives while queued, 429 with Retry-After at
capacity, and an error after the stream began arriving in-band before `[DONE]`."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import openai
import pytest

from mlserver_streaming.sse import KEEPALIVE_ENV

from .clients import LineReader, metric
from .conftest import MODEL_REPO
from .engines import Pause, run_until
from .server import Server, running_server

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

MODEL = "shakespeare"
# Generous: a stream's first token comes well within it even on a loaded machine. Nothing
# races it: the tests pause the engine before a stream could reach its end (engines.py).
DEADLINE_S = 2.0
KEEPALIVE_S = 0.03


def one_slot_repo(repo, **extra) -> object:
    """shakespeare with one running slot and one waiting place, and `extra`."""
    (repo / "settings.json").write_text((MODEL_REPO / "settings.json").read_text())
    settings = json.loads((MODEL_REPO / MODEL / "model-settings.json").read_text())
    settings["parameters"]["uri"] = str((MODEL_REPO / MODEL).resolve())
    settings["parameters"]["extra"].update(max_running=1, max_waiting=1, **extra)
    (repo / MODEL).mkdir()
    (repo / MODEL / "model-settings.json").write_text(json.dumps(settings))
    return repo


@pytest.fixture(scope="module")
def one_slot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One slot, a short deadline and keep-alives every 30 ms."""
    repo = one_slot_repo(tmp_path_factory.mktemp("openai-admission"), request_timeout_s=DEADLINE_S)
    logs = tmp_path_factory.mktemp("logs")
    with running_server(repo, [MODEL], logs, **{KEEPALIVE_ENV: str(KEEPALIVE_S)}) as server:
        yield server


@pytest.fixture(scope="module")
def one_slot_no_deadline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One slot, the default deadline (120 s: the engine may stay paused) and keep-alives
    every 30 ms."""
    repo = one_slot_repo(tmp_path_factory.mktemp("openai-queue"))
    logs = tmp_path_factory.mktemp("logs")
    with running_server(repo, [MODEL], logs, **{KEEPALIVE_ENV: str(KEEPALIVE_S)}) as server:
        yield server


COMPLETIONS = "/v1/completions"
GENERATED = "mlserver_streaming:generation_tokens_total"
LONG = {"model": MODEL, "prompt": "ROMEO:\n", "max_tokens": 250, "seed": 1}


async def first_tokens_then_past_the_deadline(engine: Pause, server: Server) -> None:
    """Run the paused engine until the server has its stream's first tokens, then hold it
    past the deadline (measured from the request's arrival, before those tokens). The
    server's own count, not the client's reading, says when: a client slowed by a busy
    machine would let the engine step on to the stream's end before it saw a token."""
    before = await metric(server, GENERATED)
    await run_until(engine, lambda: tokens_since(server, before), "the first tokens", step_s=0.001)
    await asyncio.sleep(DEADLINE_S)


async def tokens_since(server: Server, before: float) -> bool:
    return await metric(server, GENERATED) > before


async def test_past_the_deadline_the_error_arrives_in_band_then_done(one_slot):
    with Pause.engines_of(one_slot).held() as engine:
        stream = LineReader(one_slot.http_url, COMPLETIONS, {**LONG, "stream": True})
        await first_tokens_then_past_the_deadline(engine, one_slot)
    lines = await stream.result()
    data = [line for line in lines if line.startswith("data: ")]
    assert data[-1] == "data: [DONE]"
    error = json.loads(data[-2][len("data: ") :])["error"]
    assert error["code"] == "timeout" and "deadline" in error["message"]
    assert set(error) == {"message", "type", "param", "code"}
    assert data[:-2] and all("choices" in json.loads(line[6:]) for line in data[:-2])


async def test_the_sdk_raises_the_in_band_error_mid_stream(one_slot):
    client = openai.AsyncOpenAI(base_url=one_slot.http_url + "/v1", api_key="-", max_retries=0)
    received = []

    async def read() -> None:
        async for chunk in await client.completions.create(**LONG, stream=True):
            received.append(chunk.choices[0].text)

    with Pause.engines_of(one_slot).held() as engine:
        reading = asyncio.create_task(read())
        await first_tokens_then_past_the_deadline(engine, one_slot)
    with pytest.raises(openai.APIError, match="deadline"):
        await reading
    assert received  # tokens came first, then the error


async def test_a_queued_stream_gets_keepalives_and_a_full_one_gets_429(one_slot_no_deadline):
    server = one_slot_no_deadline
    # The occupant has the one slot and has begun; with the engine paused it cannot end, so
    # the next stream waits for as long as the test needs.
    with Pause.engines_of(server).held() as engine:
        occupant = LineReader(server.http_url, COMPLETIONS, {**LONG, "stream": True})
        await run_until(engine, occupant.data, "the occupant's first token")
        queued = LineReader(server.http_url, COMPLETIONS, {**LONG, "max_tokens": 2, "stream": True})
        await queued.until(lambda: len(queued.lines) >= 2, "two lines of the queued stream")
        client = openai.AsyncOpenAI(base_url=server.http_url + "/v1", api_key="-", max_retries=0)
        with pytest.raises(openai.RateLimitError) as refused:
            await client.completions.create(model=MODEL, prompt="x", max_tokens=2)
    assert refused.value.response.headers["retry-after"] == "1"
    assert refused.value.body["code"] == "server_at_capacity"
    lines = await queued.result()
    assert (await occupant.result())[-1] == "data: [DONE]"
    first_data = next(i for i, line in enumerate(lines) if line.startswith("data: "))
    assert first_data >= 2 and set(lines[:first_data]) == {": keep-alive"}
    assert lines[-1] == "data: [DONE]"
