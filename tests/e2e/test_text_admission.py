"""Admission control on a dedicated server: capacity refusals, deadlines, gRPC cancel."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import grpc
import mlserver.grpc.dataplane_pb2_grpc as dataplane
import pytest

from .clients import from_grpc, grpc_infer, metric, params_of, sse_events, to_grpc
from .conftest import one_model_repo
from .server import Server, running_server
from .test_text_generation import STREAM, request

pytestmark = pytest.mark.e2e

MODEL = "shakespeare"
DEADLINE_S = 0.25


@pytest.fixture(scope="module")
def small_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The Shakespeare model with one running slot, one waiting place and a short deadline."""
    repo = one_model_repo(
        tmp_path_factory.mktemp("admission-repo"),
        MODEL,
        max_running=1,
        max_waiting=1,
        request_timeout_s=DEADLINE_S,
    )
    with running_server(repo, [MODEL], tmp_path_factory.mktemp("logs")) as server:
        yield server


async def test_stream_past_its_deadline_ends_with_timeout(small_server):
    events = await sse_events(small_server.http_url, STREAM, request(max_tokens=250, seed=1))
    final = params_of(events[-1])
    assert final["final"] is True and final["finish_reason"] == "timeout"
    assert "deadline exceeded" in final["error"]
    assert final["completion_tokens"] < 250


async def test_requests_past_the_waiting_limit_are_refused_at_once(small_server):
    # Deadline is short on this server, so each occupant lives at most DEADLINE_S.
    async def occupy(seed: int):
        return await sse_events(small_server.http_url, STREAM, request(max_tokens=250, seed=seed))

    occupants = [asyncio.create_task(occupy(seed)) for seed in (1, 2)]
    await asyncio.sleep(0.05)
    refused = await sse_events(small_server.http_url, STREAM, request(max_tokens=4))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await grpc_infer(small_server.grpc_target, to_grpc(request(max_tokens=4), MODEL))
    await asyncio.gather(*occupants)

    final = params_of(refused[0])
    assert len(refused) == 1 and final["finish_reason"] == "error"
    assert "server at capacity" in final["error"] and final["retryable"] is True
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "server at capacity" in info.value.details()


async def test_grpc_cancel_mid_stream_frees_the_slot(small_server):
    cancelled = "mlserver_streaming:request_success_total"
    before = await metric(small_server, cancelled, finished_reason="cancelled")

    async def one_request():
        yield to_grpc(request(max_tokens=250, seed=5), MODEL)

    async with grpc.aio.insecure_channel(small_server.grpc_target) as channel:
        stub = dataplane.GRPCInferenceServiceStub(channel)
        call = stub.ModelStreamInfer(one_request(), timeout=30)
        first = from_grpc(await call.read())
        call.cancel()
    assert not params_of(first).get("final")
    for _ in range(40):
        if await metric(small_server, cancelled, finished_reason="cancelled") == before + 1:
            break
        await asyncio.sleep(0.005)
    else:
        raise AssertionError("the cancelled stream was not counted as cancelled")
    assert await metric(small_server, "mlserver_streaming:num_requests_running") == 0
