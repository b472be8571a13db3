"""The word-streaming model over REST SSE, gRPC streams and unary calls, event by event."""

from __future__ import annotations

import json
import time
from pathlib import Path

import grpc
import httpx
import mlserver.grpc.dataplane_pb2_grpc as dataplane
import pytest
from httpx_sse import aconnect_sse
from mlserver.codecs import StringCodec

from .clients import grpc_infer, grpc_stream, params_of, sse_events, to_grpc

pytestmark = pytest.mark.e2e

MODEL = "text-model"
REQUEST = json.loads((Path(__file__).parents[1] / "data" / "generate-request.json").read_text())
WORDS = ["What", " is", " the", " capital", " of", " France?"]


def prompt_request(text: str, **params) -> dict:
    body = {"inputs": [{"name": "prompt", "shape": [1], "datatype": "BYTES", "data": [text]}]}
    if params:
        body["parameters"] = params
    return body


async def test_rest_sse_streams_word_by_word_as_they_are_produced(server):
    arrivals, texts, finals = [], [], []
    async with (
        httpx.AsyncClient(base_url=server.http_url, timeout=30) as client,
        aconnect_sse(client, "POST", f"/v2/models/{MODEL}/generate_stream", json=REQUEST) as src,
    ):
        async for sse in src.aiter_sse():
            arrivals.append(time.monotonic())
            data = json.loads(sse.data)
            texts.append(data["outputs"][0]["data"][0])
            finals.append(params_of(data).get("final", False))
    assert texts == WORDS
    assert finals == [False] * 5 + [True]
    # Streamed, not buffered: words arrive spread over the model's 0.5 s delays.
    assert arrivals[-1] - arrivals[0] > 4 * 0.4


async def test_grpc_stream_matches_rest(server):
    responses = await grpc_stream(server.grpc_target, [to_grpc(REQUEST, MODEL)])
    assert [StringCodec.decode_output(r.outputs[0])[0] for r in responses] == WORDS
    last = params_of(responses[-1])
    assert last["final"] is True and last["finish_reason"] == "stop"


async def test_grpc_bidi_each_request_ends_with_its_own_final_event(server):
    requests = [to_grpc(prompt_request("to be"), MODEL), to_grpc(prompt_request("or not"), MODEL)]
    responses = await grpc_stream(server.grpc_target, requests)
    got = [
        (
            params_of(r)["request_index"],
            StringCodec.decode_output(r.outputs[0])[0],
            params_of(r).get("final", False),
        )
        for r in responses
    ]
    assert got == [(0, "to", False), (0, " be", True), (1, "or", False), (1, " not", True)]


async def test_bad_input_in_sse_stream_ends_with_error_event(server):
    body = {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["x"]}]}
    events = await sse_events(server.http_url, f"/v2/models/{MODEL}/generate_stream", body)
    assert len(events) == 1
    params = params_of(events[0])
    assert params["final"] is True and params["finish_reason"] == "error"
    assert "input 'prompt' is required" in params["error"]


async def test_unary_rest_and_grpc(server):
    async with httpx.AsyncClient(base_url=server.http_url, timeout=30) as client:
        response = await client.post(f"/v2/models/{MODEL}/infer", json=prompt_request("a b c"))
        assert response.status_code == 200
        assert response.json()["outputs"][0]["data"] == ["a b c"]
        bad = await client.post(
            f"/v2/models/{MODEL}/infer", json=prompt_request("a", temprature="1")
        )
        assert bad.status_code == 400
        assert "unknown parameter 'temprature'" in bad.json()["error"]
    reply = await grpc_infer(server.grpc_target, to_grpc(prompt_request("x y"), MODEL))
    assert StringCodec.decode_output(reply.outputs[0]) == ["x y"]


async def test_grpc_unary_bad_input_is_invalid_argument(server):
    body = {"inputs": [{"name": "prompt", "shape": [2], "datatype": "BYTES", "data": ["a", "b"]}]}
    async with grpc.aio.insecure_channel(server.grpc_target) as channel:
        stub = dataplane.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.ModelInfer(to_grpc(body, MODEL), timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "must hold one string, got 2" in info.value.details()


async def test_a_prompt_past_max_words_ends_before_the_first_word(server):
    body = prompt_request(" ".join(["word"] * 1001))  # the default max_words is 1000
    events = await sse_events(server.http_url, f"/v2/models/{MODEL}/generate_stream", body)
    assert len(events) == 1
    params = params_of(events[0])
    assert params["final"] is True and params["finish_reason"] == "error"
    assert "input 'prompt' must hold at most 1000 words (max_words), got 1001." in params["error"]
    async with httpx.AsyncClient(base_url=server.http_url, timeout=30) as client:
        response = await client.post(f"/v2/models/{MODEL}/infer", json=body)
    assert response.status_code == 400
    assert "at most 1000 words (max_words), got 1001" in response.json()["error"]
