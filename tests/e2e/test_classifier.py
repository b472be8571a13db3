"""The tumor classifier over REST, REST SSE, gRPC unary and gRPC bidi streams, event by event."""

from __future__ import annotations

import asyncio
import json
import time
from functools import cache
from pathlib import Path
from typing import Any

import grpc
import httpx
import joblib
import mlserver.grpc.dataplane_pb2_grpc as dataplane
import numpy as np
import pytest
from httpx_sse import aconnect_sse
from mlserver.codecs import StringCodec
from mlserver.types import Datatype, InferenceResponse
from sklearn.datasets import load_breast_cancer

from mlserver_streaming.classifier.features import INPUT_FEATURES
from mlserver_streaming.classifier.metadata import META_CLASSES
from mlserver_streaming.classifier.runtime import (
    PARAM_OFFSET,
    PARAM_ROWS_DONE,
    PARAM_ROWS_TOTAL,
)
from mlserver_streaming.events import ERROR, FINAL, FINISH_REASON, REQUEST_INDEX, FinishReason

from .clients import TIMEOUT, from_grpc, grpc_infer, grpc_stream, params_of, sse_events, to_grpc
from .conftest import MODEL_REPO

pytestmark = pytest.mark.e2e

MODEL = "tumor-classifier"
NEWEST = "2"  # MLServer's default version: the largest, compared as integers
REQUEST = json.loads((Path(__file__).parents[1] / "data" / "classifier_request.json").read_text())
CLASSES = ["benign", "malignant"]


@cache
def estimator(version: str):
    """The artifact the server loads, loaded here with the same scikit-learn."""
    return joblib.load(MODEL_REPO / MODEL / version / "model.joblib")


@cache
def dataset() -> np.ndarray:
    return load_breast_cancer().data


def rows_of(n: int, start: int = 0) -> np.ndarray:
    data = dataset()
    return np.tile(data, (n // len(data) + 2, 1))[start : start + n]


def features(rows: np.ndarray, **params: Any) -> dict[str, Any]:
    """A request body with flat data (what gRPC's fp64_contents needs too)."""
    tensor = {"name": INPUT_FEATURES, "datatype": "FP64", "shape": list(rows.shape)}
    body: dict[str, Any] = {"inputs": [{**tensor, "data": rows.ravel().tolist()}]}
    if params:
        body["parameters"] = params
    return body


def outputs_of(response: InferenceResponse | dict) -> dict[str, np.ndarray]:
    """Every output of a response (parsed or JSON) as numpy; labels as str."""
    if isinstance(response, dict):
        response = InferenceResponse.model_validate(response)
    arrays = {}
    for tensor in response.outputs:
        if Datatype(tensor.datatype) == Datatype.BYTES:
            arrays[tensor.name] = np.asarray(StringCodec.decode_output(tensor))
        else:
            arrays[tensor.name] = np.asarray(tensor.data.root, dtype=float).reshape(tensor.shape)
    return arrays


def assert_scores_of(version: str, rows: np.ndarray, outputs: dict[str, np.ndarray]) -> None:
    """The outputs are exactly this version's predictions for exactly these rows."""
    expected = estimator(version).predict_proba(rows)
    np.testing.assert_allclose(outputs["probabilities"], expected, rtol=1e-5, atol=1e-6)
    assert outputs["label"].tolist() == np.asarray(CLASSES)[expected.argmax(axis=1)].tolist()
    np.testing.assert_allclose(outputs["confidence"], expected.max(axis=1), rtol=1e-5)


def chunk_progress(events: list) -> list[tuple]:
    return [
        (p[PARAM_OFFSET], p[PARAM_ROWS_DONE], p[PARAM_ROWS_TOTAL], p.get(FINAL, False))
        for p in map(params_of, events)
    ]


# --- metadata and unary ---------------------------------------------------------------


async def test_metadata_states_real_shapes_and_the_class_order(server):
    async with httpx.AsyncClient(base_url=server.http_url, timeout=TIMEOUT) as client:
        for path in (f"/v2/models/{MODEL}", f"/v2/models/{MODEL}/versions/1"):
            metadata = (await client.get(path)).json()
            assert metadata["inputs"] == [
                {"name": "features", "datatype": "FP32", "shape": [-1, 30]}
            ]
            shapes = {o["name"]: o["shape"] for o in metadata["outputs"]}
            assert shapes == {"label": [-1], "probabilities": [-1, 2], "confidence": [-1]}
            probabilities = next(o for o in metadata["outputs"] if o["name"] == "probabilities")
            assert json.loads(probabilities["parameters"][META_CLASSES]) == CLASSES


async def test_rest_unary_serves_the_newest_version_unless_one_is_named(server):
    rows = np.asarray(REQUEST["inputs"][0]["data"])
    async with httpx.AsyncClient(base_url=server.http_url, timeout=TIMEOUT) as client:
        for path, version in [
            (f"/v2/models/{MODEL}/infer", NEWEST),
            (f"/v2/models/{MODEL}/versions/1/infer", "1"),
        ]:
            response = await client.post(path, json=REQUEST)
            assert response.status_code == 200, response.text
            body = response.json()
            assert body["model_version"] == version
            assert_scores_of(version, rows, outputs_of(body))
            assert params_of(body)[FINISH_REASON] == FinishReason.COMPLETE
    assert outputs_of(body)["label"].tolist() == ["malignant", "benign", "benign", "benign"]


async def test_grpc_unary_matches_rest(server):
    rows = rows_of(5)
    reply = await grpc_infer(server.grpc_target, to_grpc(features(rows), MODEL))
    assert reply.model_version == NEWEST
    assert_scores_of(NEWEST, rows, outputs_of(reply))


# --- streams --------------------------------------------------------------------------


async def test_rest_sse_answers_in_chunks_with_progress_and_one_final_event(server):
    rows = rows_of(2500)
    path = f"/v2/models/{MODEL}/infer_stream"
    events = await sse_events(server.http_url, path, features(rows, chunk_size=1000))
    assert chunk_progress(events) == [
        (0, 1000, 2500, False),
        (1000, 2000, 2500, False),
        (2000, 2500, 2500, True),
    ]
    assert params_of(events[-1])[FINISH_REASON] == FinishReason.COMPLETE
    for event in events:
        offset, done = params_of(event)[PARAM_OFFSET], params_of(event)[PARAM_ROWS_DONE]
        assert_scores_of(NEWEST, rows[offset:done], outputs_of(event))


async def test_grpc_stream_chunks_a_request_like_sse(server):
    rows = rows_of(30)
    responses = await grpc_stream(
        server.grpc_target, [to_grpc(features(rows, chunk_size="12"), MODEL)]
    )
    assert chunk_progress(responses) == [
        (0, 12, 30, False),
        (12, 24, 30, False),
        (24, 30, 30, True),
    ]
    assert_scores_of(NEWEST, rows[24:], outputs_of(responses[-1]))


async def test_grpc_bidi_answers_each_request_while_the_client_is_still_sending(server):
    """Request 2 is sent only after request 1's answer arrived on the same call."""
    async with grpc.aio.insecure_channel(server.grpc_target) as channel:
        call = dataplane.GRPCInferenceServiceStub(channel).ModelStreamInfer(timeout=30)
        for index, start in enumerate((0, 100)):
            rows = rows_of(3, start)
            await call.write(to_grpc(features(rows, chunk_size=2), MODEL))
            answers = [from_grpc(await call.read())]
            while not params_of(answers[-1]).get(FINAL):
                answers.append(from_grpc(await call.read()))
            assert [params_of(a)[REQUEST_INDEX] for a in answers] == [index, index]
            assert_scores_of(NEWEST, rows[2:], outputs_of(answers[-1]))
        await call.done_writing()
        assert await call.read() is grpc.aio.EOF


async def test_grpc_bidi_a_bad_request_ends_with_its_own_error_and_the_stream_goes_on(server):
    requests = [
        to_grpc(features(rows_of(1)), MODEL),
        to_grpc(features(rows_of(1)[:, :29]), MODEL),
        to_grpc(features(rows_of(1)), MODEL),
    ]
    responses = await grpc_stream(server.grpc_target, requests)
    got = [(params_of(r)[REQUEST_INDEX], params_of(r)[FINISH_REASON]) for r in responses]
    assert got == [(0, FinishReason.COMPLETE), (1, "error"), (2, FinishReason.COMPLETE)]
    assert "input 'features' must have shape [N, 30]" in params_of(responses[1])[ERROR]
    assert "got [1, 29]" in params_of(responses[1])[ERROR]


async def test_concurrent_streams_each_get_exactly_their_own_rows(server):
    """Many callers at once share micro-batches; nobody may see another caller's rows."""

    async def caller(i: int) -> None:
        requests = [rows_of(1 + (i + k) % 3, start=7 * i + 50 * k) for k in range(3)]
        grpc_requests = [to_grpc(features(rows), MODEL) for rows in requests]
        responses = await grpc_stream(server.grpc_target, grpc_requests, timeout=30)
        assert [params_of(r)[REQUEST_INDEX] for r in responses] == [0, 1, 2]
        for rows, response in zip(requests, responses, strict=True):
            assert_scores_of(NEWEST, rows, outputs_of(response))

    await asyncio.gather(*(caller(i) for i in range(16)))


async def test_a_big_batch_streams_early_and_leaves_the_server_responsive(server):
    """Scoring runs off the event loop: health checks and small requests answer meanwhile."""
    body = features(rows_of(50_000), chunk_size=1000)
    arrivals: list[float] = []
    side: list[tuple[str, float]] = []
    async with httpx.AsyncClient(base_url=server.http_url, timeout=TIMEOUT) as client:
        path = f"/v2/models/{MODEL}/infer_stream"
        async with aconnect_sse(client, "POST", path, json=body) as source:
            # The response began: the 15 MB upload and its parsing are behind us, so the
            # times below are the scoring's (on a busy machine those two alone took longer
            # than all 50 chunks, and a ratio from the request's start measured them).
            start, waited = time.perf_counter(), 0.0
            async for _ in source.aiter_sse():
                arrivals.append(time.perf_counter() - start - waited)
                if len(arrivals) in (2, 10, 20):  # the batch is being scored right now
                    before = time.perf_counter()
                    side.append(await _timed(client.get("/v2/health/live")))
                    side.append(
                        await _timed(client.post(f"/v2/models/{MODEL}/infer", json=REQUEST))
                    )
                    waited += time.perf_counter() - before  # not reading: not the stream's
    assert len(arrivals) == 50
    # Computing everything first would put the first event next to the last.
    assert arrivals[0] < 0.75 * arrivals[-1], arrivals
    assert all(status == 200 for status, _ in side)
    assert max(seconds for _, seconds in side) < 0.5, side


async def _timed(request) -> tuple[int, float]:
    start = time.perf_counter()
    response = await request
    return response.status_code, time.perf_counter() - start


# --- errors ---------------------------------------------------------------------------


def _one_row(**tensor: Any) -> dict[str, Any]:
    body = features(rows_of(1))
    body["inputs"][0].update(tensor)
    return body


BAD_REQUESTS = [
    pytest.param(
        _one_row(shape=[1, 29], data=[0.0] * 29),
        "input 'features' must have shape [N, 30] (30 features per row), got [1, 29]",
        id="feature-count",
    ),
    pytest.param(
        _one_row(datatype="INT64", data=[0] * 30), "must be FP32 or FP64, got INT64", id="datatype"
    ),
    pytest.param(_one_row(shape=[30]), "must have shape [N, 30]", id="rank"),
    pytest.param(
        _one_row(data=[None] + [0.0] * 29),
        "must hold finite numbers (no NaN, inf or null), got nan at row 0, feature 0",
        id="null",
    ),
    pytest.param(_one_row(shape=[0, 30], data=[]), "must have 1 to 200000 rows", id="empty"),
    pytest.param(
        _one_row(shape=[200_001, 30]),
        "must have 1 to 200000 rows (max_rows), got 200001",
        id="over-row-limit",
    ),
    pytest.param(
        {**_one_row(), "parameters": {"chunk_size": 0}},
        "chunk_size must be in [1, 200000], got 0",
        id="chunk-size",
    ),
]


@pytest.mark.parametrize(("body", "message"), BAD_REQUESTS)
async def test_bad_input_over_rest_is_a_400_naming_the_field(server, body, message):
    async with httpx.AsyncClient(base_url=server.http_url, timeout=TIMEOUT) as client:
        response = await client.post(f"/v2/models/{MODEL}/infer", json=body)
    assert response.status_code == 400
    assert message in response.json()["error"]


@pytest.mark.parametrize(("body", "message"), BAD_REQUESTS[:4])
async def test_bad_input_in_an_sse_stream_is_one_final_error_event(server, body, message):
    events = await sse_events(server.http_url, f"/v2/models/{MODEL}/infer_stream", body)
    assert len(events) == 1
    params = params_of(events[0])
    assert (params[FINAL], params[FINISH_REASON]) == (True, "error")
    assert message in params[ERROR]


async def test_bad_input_over_grpc_is_invalid_argument(server):
    body = _one_row(data=[float("nan")] + [0.0] * 29)  # NaN travels over gRPC, not in JSON
    async with grpc.aio.insecure_channel(server.grpc_target) as channel:
        stub = dataplane.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.ModelInfer(to_grpc(body, MODEL), timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "got nan at row 0, feature 0" in info.value.details()


async def test_an_unknown_version_is_404_over_rest_and_not_found_over_grpc(server):
    async with httpx.AsyncClient(base_url=server.http_url, timeout=TIMEOUT) as client:
        response = await client.post(f"/v2/models/{MODEL}/versions/9/infer", json=REQUEST)
    assert response.status_code == 404
    assert response.json()["error"] == f"Model {MODEL} with version 9 not found"
    request = to_grpc(features(rows_of(1)), MODEL, version="9")
    async with grpc.aio.insecure_channel(server.grpc_target) as channel:
        stub = dataplane.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as unary:
            await stub.ModelInfer(request, timeout=10)
    with pytest.raises(grpc.aio.AioRpcError) as stream:
        await grpc_stream(server.grpc_target, [request], timeout=10)
    for info in (unary, stream):
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        assert "with version 9 not found" in info.value.details()
