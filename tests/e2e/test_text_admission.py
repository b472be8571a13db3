"""Admission control on a dedicated server: capacity refusals, deadlines, gRPC cancel."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import grpc
import mlserver.grpc.dataplane_pb2_grpc as dataplane
import pytest

from .clients import (
    SSEReader,
    from_grpc,
    grpc_infer,
    metric,
    params_of,
    sse_events,
    stream_opened,
    to_grpc,
)
from .conftest import one_model_repo
from .engines import Pause, run_until
from .server import Server, running_server
from .test_text_generation import STREAM, request

pytestmark = pytest.mark.e2e

MODEL = "shakespeare"
# Generous: a stream's first token comes well within it even on a loaded machine. Nothing
# races it: the tests pause the engine before a stream could reach its end (engines.py).
DEADLINE_S = 2.0


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
    with Pause.engines_of(small_server).held() as engine:
        stream = SSEReader(small_server.http_url, STREAM, request(max_tokens=250, seed=1))
        await run_until(engine, stream.has(1), "the first token")
        await asyncio.sleep(DEADLINE_S)  # past the deadline (it began before the token)
    events = await stream.result()
    final = params_of(events[-1])
    assert final["final"] is True and final["finish_reason"] == "timeout"
    assert "deadline exceeded" in final["error"]
    assert 0 < final["completion_tokens"] < 250


async def test_requests_past_the_waiting_limit_are_refused_at_once(small_server):
    url = small_server.http_url
    # With the engine paused the two occupants (one running, one waiting) stay until the
    # test lets them go; the second is in once its stream is open.
    with Pause.engines_of(small_server).held() as engine:
        running = SSEReader(url, STREAM, request(max_tokens=250, seed=1))
        await run_until(engine, running.has(1), "the first occupant's first token")
        waiting_id = f"waiting-{uuid.uuid4().hex}"
        waiting = SSEReader(url, STREAM, {**request(max_tokens=250, seed=2), "id": waiting_id})
        await waiting.until(lambda: stream_opened(url, waiting_id), "the second occupant")
        refused = await sse_events(url, STREAM, request(max_tokens=4))
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await grpc_infer(small_server.grpc_target, to_grpc(request(max_tokens=4), MODEL))
    await asyncio.gather(running.result(), waiting.result())

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

    async def counted() -> bool:
        return await metric(small_server, cancelled, finished_reason="cancelled") > before

    async with grpc.aio.insecure_channel(small_server.grpc_target) as channel:
        stub = dataplane.GRPCInferenceServiceStub(channel)
        with Pause.engines_of(small_server).held() as engine:
            call = stub.ModelStreamInfer(one_request(), timeout=30)
            reading = asyncio.ensure_future(call.read())
            await run_until(engine, reading.done, "the first event")
            first = from_grpc(reading.result())
            call.cancel()
            # A few milliseconds at a time: the engine is still mid-stream when the cancel
            # the server sends it arrives.
            await run_until(engine, counted, "the cancelled stream to be counted")
    assert not params_of(first).get("final")
    assert await metric(small_server, cancelled, finished_reason="cancelled") == before + 1
    assert await metric(small_server, "mlserver_streaming:num_requests_running") == 0
