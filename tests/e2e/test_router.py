"""The A/B router over REST, REST SSE, gRPC unary and gRPC bidi: sticky users, labelled answers."""

from __future__ import annotations

import json

import grpc
import httpx
import mlserver.grpc.dataplane_pb2_grpc as dataplane
import pytest

from mlserver_streaming.events import ERROR, FINAL, FINISH_REASON, REQUEST_INDEX
from mlserver_streaming.router import (
    PARAM_BUCKET,
    PARAM_SERVED_MODEL,
    PARAM_SERVED_VERSION,
    Routes,
    bucket_of,
)

from .clients import TIMEOUT, grpc_stream, params_of, sse_events, to_grpc
from .conftest import MODEL_REPO
from .test_classifier import MODEL, assert_scores_of, features, outputs_of, rows_of

pytestmark = pytest.mark.e2e

ROUTER = "tumor-ab"


def expected_version(user: str) -> str:
    """Where the router's own settings send a user, computed here independently."""
    settings = json.loads((MODEL_REPO / ROUTER / "model-settings.json").read_text())
    targets = settings["parameters"]["extra"]["targets"]
    versions = [t["folder"].rsplit("/", 1)[1] for t in targets]
    return Routes(versions, [t["weight"] for t in targets]).version_for(bucket_of(user, ROUTER))


def user_per_version() -> dict[str, str]:
    users: dict[str, str] = {}
    for i in range(1000):
        users.setdefault(expected_version(f"user-{i}"), f"user-{i}")
    assert sorted(users) == ["1", "2"]
    return users


async def test_each_user_sticks_to_its_version_and_every_answer_says_which(server):
    rows = rows_of(3)
    async with httpx.AsyncClient(base_url=server.http_url, timeout=TIMEOUT) as client:
        for version, user in user_per_version().items():
            for _ in range(2):
                body = features(rows, user_id=user)
                response = await client.post(f"/v2/models/{ROUTER}/infer", json=body)
                assert response.status_code == 200, response.text
                answer = response.json()
                assert (answer["model_name"], answer["model_version"]) == (ROUTER, version)
                got = params_of(answer)
                assert (got[PARAM_SERVED_MODEL], got[PARAM_SERVED_VERSION]) == (MODEL, version)
                assert got[PARAM_BUCKET] == bucket_of(user, ROUTER)
                assert_scores_of(version, rows, outputs_of(answer))


async def test_sse_events_of_a_routed_stream_all_name_the_version(server):
    user = user_per_version()["1"]
    rows = rows_of(5)
    body = features(rows, user_id=user, chunk_size=2)
    events = await sse_events(server.http_url, f"/v2/models/{ROUTER}/infer_stream", body)
    assert [params_of(e)[PARAM_SERVED_VERSION] for e in events] == ["1", "1", "1"]
    assert [params_of(e).get(FINAL, False) for e in events] == [False, False, True]
    assert_scores_of("1", rows[4:], outputs_of(events[-1]))


async def test_grpc_bidi_routes_each_request_by_its_own_user(server):
    users = user_per_version()
    requests = [
        to_grpc(features(rows_of(1), user_id=users["2"]), ROUTER),
        to_grpc(features(rows_of(1)), ROUTER),
        to_grpc(features(rows_of(2), user_id=users["1"], chunk_size=1), ROUTER),
    ]
    responses = await grpc_stream(server.grpc_target, requests)
    got = [
        (p[REQUEST_INDEX], p.get(PARAM_SERVED_VERSION), p.get(FINISH_REASON))
        for p in map(params_of, responses)
    ]
    assert got == [(0, "2", "complete"), (1, None, "error"), (2, "1", None), (2, "1", "complete")]
    assert "parameter 'user_id' is required" in params_of(responses[1])[ERROR]
    assert responses[0].model_version == "2" and responses[3].model_version == "1"


async def test_a_request_without_user_id_is_refused_naming_the_field(server):
    async with httpx.AsyncClient(base_url=server.http_url, timeout=TIMEOUT) as client:
        response = await client.post(f"/v2/models/{ROUTER}/infer", json=features(rows_of(1)))
    assert response.status_code == 400
    assert "parameter 'user_id' is required to choose a version (1 or 2)" in response.json()[ERROR]
    async with grpc.aio.insecure_channel(server.grpc_target) as channel:
        stub = dataplane.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.ModelInfer(to_grpc(features(rows_of(1), user_id=True), ROUTER), timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "user_id must be a non-empty string or an integer, got True" in info.value.details()
