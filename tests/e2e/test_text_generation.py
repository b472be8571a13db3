"""Text generation over a real server: REST SSE, gRPC unary and bidi, parameters, errors."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import grpc
import httpx
import pytest
from httpx_sse import aconnect_sse

from .clients import (
    TIMEOUT,
    SSEReader,
    grpc_infer,
    grpc_stream,
    metric,
    params_of,
    sse_events,
    stream_opened,
    to_grpc,
)
from .engines import Pause, run_until

pytestmark = pytest.mark.e2e

MODEL = "shakespeare"
STREAM = f"/v2/models/{MODEL}/generate_stream"
INFER = f"/v2/models/{MODEL}/infer"


def request(prompt: str = "ROMEO:", **params) -> dict:
    body: dict = {
        "inputs": [{"name": "prompt", "shape": [1], "datatype": "BYTES", "data": [prompt]}]
    }
    if params:
        body["parameters"] = params
    return body


def output(event: dict, name: str):
    for tensor in event["outputs"]:
        if tensor["name"] == name:
            return tensor["data"]
    raise KeyError(name)


def as_json(response) -> dict:
    """A types.InferenceResponse (from gRPC) as the same JSON REST sends."""
    data = json.loads(response.model_dump_json(exclude_none=True))
    for tensor in data["outputs"]:
        if tensor["datatype"] == "BYTES":
            tensor["data"] = [
                d.decode() if isinstance(d, bytes) else d
                for d in response.outputs[
                    [o.name for o in response.outputs].index(tensor["name"])
                ].data.root
            ]
    return data


def summary(events: list[dict]) -> tuple[str, list[int], dict]:
    """(whole text, all token ids, parameters of the final event).

    Event boundaries are not compared: under load, deltas queued for one stream are sent
    as one event.
    """
    text = "".join(output(e, "text")[0] for e in events)
    ids = [t for e in events for t in output(e, "token_ids")]
    return text, ids, params_of(events[-1])


async def test_rest_sse_streams_deltas_then_one_final_event(server):
    events = await sse_events(server.http_url, STREAM, request(max_tokens=24, seed=1))
    texts = [output(e, "text")[0] for e in events]
    _, ids, final = summary(events)
    assert [params_of(e).get("final", False) for e in events] == [False] * (len(events) - 1) + [
        True
    ]
    assert final["finish_reason"] in ("length", "eos")
    assert final["completion_tokens"] == len(ids) <= 24
    assert final["prompt_tokens"] > 0 and final["seed"] == "1"
    assert all(t for t in texts[:-1])  # every non-final event carries new text
    # Alone on the server, auto stream_interval sends every token as it comes.
    assert all(len(output(e, "token_ids")) == 1 for e in events[:-1])


async def test_same_seed_same_text_on_rest_sse_grpc_stream_and_unary(server):
    body = request("JULIET:", max_tokens=20, seed=42, temperature=0.9)
    first = summary(await sse_events(server.http_url, STREAM, body))
    second = summary(await sse_events(server.http_url, STREAM, body))
    streamed = await grpc_stream(server.grpc_target, [to_grpc(grpc_safe(body), MODEL)])
    over_grpc = summary([as_json(r) for r in streamed])
    assert first == second
    assert over_grpc[:2] == first[:2]
    async with httpx.AsyncClient(base_url=server.http_url, timeout=TIMEOUT) as client:
        unary = (await client.post(INFER, json=body)).json()
    assert output(unary, "text") == [first[0]]
    assert output(unary, "token_ids") == first[1]
    grpc_unary = as_json(await grpc_infer(server.grpc_target, to_grpc(grpc_safe(body), MODEL)))
    assert output(grpc_unary, "token_ids") == first[1]
    assert params_of(grpc_unary)["finish_reason"] == first[2]["finish_reason"]


# Each variant as REST sends it (native JSON types) and as a gRPC client must send it
# (InferParameter has no float or list: strings instead).
VARIANTS = {
    "temperature": ({"temperature": 0.0}, {"temperature": "0"}),
    "top_k": ({"top_k": 1, "temperature": 1.0}, {"top_k": 1, "temperature": "1.0"}),
    "top_p": ({"top_p": 0.05}, {"top_p": "0.05"}),
    "repetition_penalty": ({"repetition_penalty": 3.0}, {"repetition_penalty": "3.0"}),
    "stop": ({"stop": ["e", "a"]}, {"stop": '["e", "a"]'}),
    "max_tokens": ({"max_tokens": 3}, {"max_tokens": 3}),
    "seed": ({"seed": 5}, {"seed": 5}),
    "logprobs": ({"logprobs": 3}, {"logprobs": 3}),
}


@pytest.mark.parametrize("name", list(VARIANTS))
async def test_every_parameter_is_honoured_over_grpc_exactly_as_over_rest(server, name):
    rest_params, grpc_params = VARIANTS[name]
    base = {"max_tokens": 16, "seed": 11, "temperature": 1.5, "top_k": 0, "top_p": 1.0}
    body_rest = request("KING:", **{**base, **rest_params})
    body_grpc = request("KING:", **{**{k: str(v) for k, v in base.items()}, **grpc_params})
    baseline = summary(await sse_events(server.http_url, STREAM, request("KING:", **base)))
    rest = await sse_events(server.http_url, STREAM, body_rest)
    grpc_events = [
        as_json(r) for r in await grpc_stream(server.grpc_target, [to_grpc(body_grpc, MODEL)])
    ]
    assert summary(grpc_events)[:2] == summary(rest)[:2]
    if name != "logprobs":  # logprobs adds outputs and leaves the tokens alone
        assert summary(rest)[:2] != baseline[:2], f"{name} had no effect"
    else:
        for tensor_name, width in (("logprobs", None), ("top_logprobs", 3), ("top_token_ids", 3)):
            shapes = [
                t["shape"] for e in grpc_events for t in e["outputs"] if t["name"] == tensor_name
            ]
            assert shapes and all(width is None or s[-1] == width for s in shapes)
    if name == "stop":
        final = summary(rest)[2]
        assert final["finish_reason"] == "stop"
        assert not any(c in summary(rest)[0] for c in "ea")


@pytest.mark.parametrize("transport", ["rest", "grpc"])
async def test_stream_interval_groups_tokens_into_fewer_events_with_the_same_text(
    server, transport
):
    base = {"max_tokens": 30, "seed": 3, "temperature": 0.8}

    async def events(interval: int) -> list[dict]:
        body = request("HAMLET:", **base, stream_interval=interval)
        if transport == "rest":
            return await sse_events(server.http_url, STREAM, body)
        streamed = await grpc_stream(server.grpc_target, [to_grpc(grpc_safe(body), MODEL)])
        return [as_json(r) for r in streamed]

    every_token, grouped = await events(1), await events(5)
    sizes = [len(output(e, "token_ids")) for e in grouped]
    assert summary(grouped)[:2] == summary(every_token)[:2]
    assert params_of(grouped[-1])["final"] is True
    assert sizes[0] <= 2  # the first text is not held for the interval
    assert all(size >= 5 for size in sizes[1:-1]), sizes
    assert len(grouped) < len(every_token) / 3


BAD = [
    (request(top_p=1.5), "top_p must be in (0, 1], got 1.5."),
    (request(temprature=0.5), "unknown parameter 'temprature'"),
    (request(max_tokens=100000), "max_tokens must be in [1, 256], got 100000."),
    (request(""), "input 'prompt' must not be empty."),
    (request("word " * 400), "input 'prompt' must be at most"),
    (request(temperature="hot"), "temperature must be a number, got 'hot'."),
    (request(stream_interval=65), "stream_interval must be in [0, 64], got 65."),
    (
        {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["x"]}]},
        "input 'prompt' is required",
    ),
]


@pytest.mark.parametrize(("body", "message"), BAD, ids=[m[:24] for _, m in BAD])
async def test_bad_input_is_a_clear_error_on_every_transport(server, body, message):
    events = await sse_events(server.http_url, STREAM, body)
    assert len(events) == 1
    final = params_of(events[0])
    assert final["final"] is True and final["finish_reason"] == "error"
    assert message in final["error"]
    async with httpx.AsyncClient(base_url=server.http_url, timeout=TIMEOUT) as client:
        unary = await client.post(INFER, json=body)
    assert unary.status_code == 400 and message in unary.json()["error"]
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await grpc_infer(server.grpc_target, to_grpc(grpc_safe(body), MODEL))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in info.value.details()


def grpc_safe(body: dict) -> dict:
    """Floats as strings, as a gRPC client must send them (InferParameter drops floats)."""
    params = {
        k: str(v) if isinstance(v, float) else v for k, v in body.get("parameters", {}).items()
    }
    return {**body, "parameters": params} if params else body


async def test_non_utf8_prompt_over_grpc_is_invalid_argument(server):
    grpc_request = to_grpc(request("x"), MODEL)
    grpc_request.inputs[0].contents.bytes_contents[0] = b"caf\xe9"
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await grpc_infer(server.grpc_target, grpc_request)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "must be valid UTF-8, got byte 0xe9 at position 3" in info.value.details()


async def test_grpc_bidi_dialogue_each_turn_ends_with_its_final_event(server):
    turns = [
        request("HAMLET:", max_tokens=5, seed=1),
        request("", seed=2),
        request("OPHELIA:", max_tokens=4, seed=3),
    ]
    responses = [
        as_json(r)
        for r in await grpc_stream(server.grpc_target, [to_grpc(t, MODEL) for t in turns])
    ]
    by_turn: dict[int, list[dict]] = {}
    for response in responses:
        by_turn.setdefault(params_of(response)["request_index"], []).append(response)
    assert list(by_turn) == [0, 1, 2]  # in order, one turn after the other
    for index, events in by_turn.items():
        finals = [params_of(e).get("final", False) for e in events]
        assert finals == [False] * (len(events) - 1) + [True], index
    assert params_of(by_turn[1][-1])["finish_reason"] == "error"
    assert summary(by_turn[0])[2]["completion_tokens"] == 5
    assert summary(by_turn[2])[2]["completion_tokens"] == 4


async def test_disconnect_stops_generation_for_that_sequence(server):
    generated = "mlserver_streaming:generation_tokens_total"
    cancelled_before = await metric(
        server, "mlserver_streaming:request_success_total", finished_reason="cancelled"
    )
    running = "mlserver_streaming:num_requests_running"

    async def stopped() -> bool:
        return await metric(server, running, model_name=MODEL) == 0

    # The engines run a few ms at a time: the sequence is mid-way when the client leaves.
    with Pause.engines_of(server).held() as engines:
        reader = SSEReader(server.http_url, STREAM, request(max_tokens=200, seed=3))
        await run_until(engines, reader.has(3), "three events")
        received = await reader.disconnect()  # closes the connection mid-stream
        await run_until(engines, stopped, "the sequence to stop after the disconnect")
    assert not any(params_of(event).get("final") for event in received), received
    tokens = await metric(server, generated, model_name=MODEL)
    await asyncio.sleep(0.5)
    assert await metric(server, generated, model_name=MODEL) == tokens
    cancelled = await metric(
        server, "mlserver_streaming:request_success_total", finished_reason="cancelled"
    )
    assert cancelled == cancelled_before + 1


async def test_health_answers_promptly_while_a_stream_generates(server):
    async def generate(seed: int):
        return await sse_events(server.http_url, STREAM, request(max_tokens=200, seed=seed))

    task = asyncio.gather(*(generate(seed) for seed in range(8)))
    await asyncio.sleep(0.1)
    latencies = []
    async with httpx.AsyncClient(base_url=server.http_url, timeout=TIMEOUT) as client:
        while not task.done() and len(latencies) < 20:
            start = time.perf_counter()
            assert (await client.get("/v2/health/live")).status_code == 200
            latencies.append(time.perf_counter() - start)
            await asyncio.sleep(0.02)
    await task
    assert latencies and sorted(latencies)[len(latencies) // 2] < 0.25


async def test_metrics_endpoint_exposes_generation_metrics(server):
    counted = {  # what one 4-token request adds at least (other tests' streams may add more)
        "time_to_first_token_seconds_count": 1,
        "inter_token_latency_seconds_count": 3,
        "request_queue_time_seconds_count": 1,
        "e2e_request_latency_seconds_count": 1,
        "prompt_tokens_total": 1,
        "generation_tokens_total": 4,
        "request_success_total": 1,
    }
    names = [f"mlserver_streaming:{name}" for name in counted]
    before = [await metric(server, name, model_name=MODEL) for name in names]
    events = await sse_events(server.http_url, STREAM, request(max_tokens=4, seed=9))
    assert params_of(events[-1])["finish_reason"] == "length"  # 4 tokens, to its end
    after = [await metric(server, name, model_name=MODEL) for name in names]
    for name, added, was, now in zip(counted, counted.values(), before, after, strict=True):
        assert now - was >= added, (name, was, now)
    async with httpx.AsyncClient(timeout=TIMEOUT) as client:
        text = (await client.get(server.metrics_url)).text
    for gauge in ("num_requests_running", "num_requests_waiting"):
        assert f"mlserver_streaming:{gauge}{{" in text, gauge


async def timed_events(base_url: str, body: dict) -> tuple[list[dict], list[float]]:
    """Events of one SSE stream and when each arrived."""
    events, times = [], []
    async with (
        httpx.AsyncClient(base_url=base_url, timeout=TIMEOUT) as client,
        aconnect_sse(client, "POST", STREAM, json=body) as source,
    ):
        async for sse in source.aiter_sse():
            events.append(json.loads(sse.data))
            times.append(time.monotonic())
    return events, times


async def test_seeded_text_is_the_same_alone_and_beside_31_other_streams(server):
    body = request("PORTIA:", max_tokens=24, seed=1234, temperature=0.9)
    alone = summary(await sse_events(server.http_url, STREAM, body))
    bodies = [body] + [request("BRUTUS:", max_tokens=40, seed=i) for i in range(31)]
    ids = [f"beside-{uuid.uuid4().hex}" for _ in bodies]
    # All 32 are in (their streams open) before the paused engine takes any: they start
    # together, however long this machine takes to send them.
    with Pause.engines_of(server).held():
        streams = [{**b, "id": i} for b, i in zip(bodies, ids, strict=True)]
        reading = asyncio.gather(*(timed_events(server.http_url, b) for b in streams))
        async with asyncio.timeout(60):
            for stream_id in ids:
                while not await stream_opened(server.http_url, stream_id):
                    await asyncio.sleep(0.02)
    (target, times), *rest = await reading
    assert summary(target)[:2] == alone[:2]
    # The others really ran beside it: most of them streamed while the target did.
    overlapping = [ts for _, ts in rest if ts[0] < times[-1] and ts[-1] > times[0]]
    assert len(overlapping) >= 16, len(overlapping)
