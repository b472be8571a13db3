"""Resumable streams over a real server: REST SSE, gRPC, the GET SSE route, background,
cancel, and unknown or expired stream ids."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import mlserver.grpc.dataplane_pb2_grpc as dataplane
import pytest
from httpx_sse import aconnect_sse

from .clients import (
    TIMEOUT,
    SSEReader,
    from_grpc,
    grpc_infer,
    grpc_stream,
    metric,
    params_of,
    to_grpc,
)
from .conftest import one_model_repo
from .engines import Pause, run_until
from .server import Server, running_server
from .test_text_generation import INFER, MODEL, STREAM, as_json, output, request

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

SEEDED = {"max_tokens": 40, "seed": 21, "temperature": "0.9"}
CANCELLED = "mlserver_streaming:request_success_total"


def new_id() -> str:
    return f"resume-{uuid.uuid4().hex}"


def with_id(body: dict, stream_id: str) -> dict:
    return {**body, "id": stream_id}


def resume(stream_id: str, after: int | None = None, key: str = "resume") -> dict:
    """A resume request: a valid V2 shape whose prompt is ignored."""
    params: dict[str, Any] = {key: stream_id}
    if after is not None:
        params["starting_after"] = after
    return request("ignored", **params)


def indexes(events: list[dict]) -> list[int]:
    return [params_of(e)["event_index"] for e in events]


def completion(events: list[dict]) -> tuple[str, list[int], dict]:
    """Text, token ids and final parameters (but its own index) of a stream's events."""
    final = {k: v for k, v in params_of(events[-1]).items() if k != "event_index"}
    text = "".join(output(e, "text")[0] for e in events)
    return text, [t for e in events for t in output(e, "token_ids")], final


async def sse_head(base_url: str, body: dict, k: int) -> list[dict]:
    """The first k events of a POSTed SSE stream, then the connection drops."""
    events: list[dict] = []
    async with (
        httpx.AsyncClient(base_url=base_url, timeout=TIMEOUT) as client,
        aconnect_sse(client, "POST", STREAM, json=body) as source,
    ):
        async for sse in source.aiter_sse():
            events.append(json.loads(sse.data))
            if len(events) == k:
                break
    return events


async def sse_all(base_url: str, body: dict) -> list[dict]:
    return await sse_head(base_url, body, -1)


async def grpc_head(target: str, body: dict, k: int) -> list[dict]:
    """The first k events of a gRPC stream, then the call is cancelled."""

    async def one():
        yield to_grpc(body, MODEL)

    async with grpc.aio.insecure_channel(target) as channel:
        call = dataplane.GRPCInferenceServiceStub(channel).ModelStreamInfer(one(), timeout=30)
        events = [as_json(from_grpc(await call.read())) for _ in range(k)]
        call.cancel()
    return events


async def grpc_all(target: str, body: dict) -> list[dict]:
    return [as_json(r) for r in await grpc_stream(target, [to_grpc(body, MODEL)])]


async def test_rest_sse_background_stream_resumes_with_no_duplicate_and_no_gap(server):
    url, stream_id = server.http_url, new_id()
    undisturbed = await sse_all(url, request("ROMEO:", **SEEDED))
    head = await sse_head(url, with_id(request("ROMEO:", background=True, **SEEDED), stream_id), 4)
    tail = await sse_all(url, resume(stream_id, 3))
    joined = head + tail
    assert {e["id"] for e in head} == {stream_id}
    assert indexes(joined) == list(range(len(joined)))
    # One event per engine delta: the same events as an undisturbed run, the final included.
    assert indexes(joined) == indexes(undisturbed)
    assert [e["outputs"] for e in joined] == [e["outputs"] for e in undisturbed]
    assert completion(joined) == completion(undisturbed)
    # Event by event, the resumed stream is the stream's log (replayed from the start).
    assert [e["outputs"] for e in joined] == [
        e["outputs"] for e in await sse_all(url, resume(stream_id))
    ]


async def test_grpc_background_stream_resumes_with_no_duplicate_and_no_gap(server):
    target, stream_id = server.grpc_target, new_id()
    undisturbed = await grpc_all(target, request("JULIET:", **SEEDED))
    body = with_id(request("JULIET:", background=True, **SEEDED), stream_id)
    head = await grpc_head(target, body, 3)
    tail = await grpc_all(target, resume(stream_id, 2))
    joined = head + tail
    assert head[0]["id"] == stream_id
    assert indexes(joined) == indexes(undisturbed) == list(range(len(joined)))
    assert completion(joined) == completion(undisturbed)
    # A finished stream within retention replays its rest too, on the other transport.
    rest = await sse_all(server.http_url, resume(stream_id, 1))
    assert [e["outputs"] for e in rest] == [e["outputs"] for e in joined[2:]]


async def get_sse(base_url: str, stream_id: str, headers: dict) -> list[tuple[str, dict]]:
    """(SSE id line, event JSON) of every event of `GET /v2/streams/{id}`."""
    async with (
        httpx.AsyncClient(base_url=base_url, timeout=TIMEOUT) as client,
        aconnect_sse(client, "GET", f"/v2/streams/{stream_id}", headers=headers) as source,
    ):
        source.response.raise_for_status()
        return [(sse.id, json.loads(sse.data)) async for sse in source.aiter_sse()]


async def test_get_route_resumes_from_last_event_id_as_an_event_source_does(server):
    url, stream_id = server.http_url, new_id()
    head = await sse_head(url, with_id(request("HAMLET:", background=True, **SEEDED), stream_id), 3)
    tail = await get_sse(url, stream_id, {"Last-Event-ID": "2"})
    joined = head + [event for _, event in tail]
    assert [line for line, _ in tail] == [str(i) for i in indexes(joined)[3:]]
    assert indexes(joined) == list(range(len(joined)))
    assert params_of(joined[-1])["final"] is True and tail[0][1]["id"] == stream_id
    assert [e for _, e in await get_sse(url, stream_id, {})][3:] == [e for _, e in tail]
    async with httpx.AsyncClient(base_url=url, timeout=TIMEOUT) as client:
        done = await client.get(f"/v2/streams/{stream_id}", headers={"Last-Event-ID": tail[-1][0]})
        bad = await client.get(f"/v2/streams/{stream_id}", headers={"Last-Event-ID": "x"})
    assert done.status_code == 204  # all seen: an EventSource stops reconnecting
    assert bad.status_code == 400 and "Last-Event-ID must be an integer" in bad.json()["error"]


async def wait_for(condition, timeout: float = 60.0) -> None:
    async with asyncio.timeout(timeout):
        while not await condition():
            await asyncio.sleep(0.05)


async def idle(server: Server) -> bool:
    return await metric(server, "mlserver_streaming:num_requests_running", model_name=MODEL) == 0


async def test_disconnect_cancels_without_background_and_not_with_it(server):
    url = server.http_url
    before = await metric(server, CANCELLED, finished_reason="cancelled")
    attached, detached = new_id(), new_id()
    # The engines run a few ms at a time: the stream is mid-way when the client leaves.
    with Pause.engines_of(server).held() as engines:
        reader = SSEReader(url, STREAM, with_id(request(max_tokens=200, seed=3), attached))
        await run_until(engines, reader.has(3), "three events")
        await reader.disconnect()
        await run_until(engines, lambda: idle(server), "the slot to be freed")
    assert params_of((await sse_all(url, resume(attached, 2)))[-1])["finish_reason"] == "cancelled"
    body = with_id(request(max_tokens=60, seed=4, background=True), detached)
    await sse_head(url, body, 3)
    rest = await sse_all(url, resume(detached, 2))  # generation went on without a client
    final = params_of(rest[-1])
    assert final["finish_reason"] in ("length", "eos") and final["completion_tokens"] > 3
    assert await metric(server, CANCELLED, finished_reason="cancelled") == before + 1


@pytest.mark.parametrize("how", ["route", "rest_param", "grpc_param"])
async def test_explicit_cancel_ends_a_background_stream(server, how):
    url, stream_id = server.http_url, new_id()

    async def cancel() -> list[dict]:
        if how == "route":
            return await sse_all(url, resume(stream_id, 1))
        if how == "rest_param":
            return await sse_all(url, resume(stream_id, 1, key="cancel"))
        return await grpc_all(server.grpc_target, resume(stream_id, 1, key="cancel"))

    # The engines run a few ms at a time: the stream is mid-way when the cancel comes.
    with Pause.engines_of(server).held() as engines:
        body = with_id(request(max_tokens=250, seed=5, background=True), stream_id)
        reader = SSEReader(url, STREAM, body)
        await run_until(engines, reader.has(2), "two events")
        await reader.disconnect()
        if how == "route":  # the cancel is in before the engine steps on (it is paused)
            async with httpx.AsyncClient(base_url=url, timeout=TIMEOUT) as client:
                answer = await client.post(f"/v2/streams/{stream_id}/cancel")
            assert answer.status_code == 200 and answer.json()["id"] == stream_id
        cancelling = asyncio.ensure_future(cancel())
        await run_until(engines, cancelling.done, "the cancelled stream's end")
    events = cancelling.result()
    final = params_of(events[-1])
    assert final["finish_reason"] == "cancelled" and final["completion_tokens"] < 250
    assert indexes(events) == list(range(2, 2 + len(events)))
    await wait_for(lambda: idle(server))


async def assert_not_found(server: Server, stream_id: str) -> None:
    """Unknown on every transport: 404 / NOT_FOUND, or one error event inside a stream."""
    message = f"stream {stream_id!r} not found"
    body = resume(stream_id, 0)
    async with httpx.AsyncClient(base_url=server.http_url, timeout=TIMEOUT) as client:
        unary = await client.post(INFER, json=body)
        route = await client.get(f"/v2/streams/{stream_id}")
        cancel = await client.post(f"/v2/streams/{stream_id}/cancel")
    assert unary.status_code == route.status_code == cancel.status_code == 404
    assert message in unary.json()["error"] and message in route.json()["error"]
    for events in (
        await sse_all(server.http_url, body),
        await grpc_all(server.grpc_target, body),
    ):
        (final,) = [params_of(e) for e in events]
        assert final["finish_reason"] == "error" and message in final["error"]
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await grpc_infer(server.grpc_target, to_grpc(body, MODEL))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND and message in info.value.details()


async def test_an_unknown_stream_id_is_not_found_on_every_transport(server):
    await assert_not_found(server, "no-such-stream")


async def test_a_stream_id_outside_the_rule_is_refused_on_every_route(server):
    rule = "1 to 128 characters of A-Z, a-z, 0-9 and . _ ~ : -"
    long_id = "x" * 5000
    events = await sse_all(server.http_url, with_id(request(max_tokens=4), long_id))
    assert len(events) == 1 and params_of(events[0])["finish_reason"] == "error"
    assert f"the request id must be a stream id: {rule}" in params_of(events[0])["error"]
    resumed = await sse_all(server.http_url, resume("a/b"))
    assert f"resume must be a stream id: {rule}, got 'a/b'." in params_of(resumed[0])["error"]
    async with httpx.AsyncClient(base_url=server.http_url, timeout=TIMEOUT) as client:
        got = await client.get("/v2/streams/" + long_id)
        cancelled = await client.post("/v2/streams/a%20b/cancel")
    assert got.status_code == cancelled.status_code == 400
    assert f"the stream id must be a stream id: {rule}" in cancelled.json()["error"]


@pytest.fixture(scope="module")
def forgetful_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The Shakespeare model keeping ended streams for half a second."""
    repo = one_model_repo(
        tmp_path_factory.mktemp("resume-repo"), MODEL, resume_retention_s=0.5, warmup_tokens=0
    )
    with running_server(repo, [MODEL], tmp_path_factory.mktemp("logs")) as server:
        yield server


async def test_an_expired_stream_is_not_found(forgetful_server):
    stream_id = new_id()
    url = forgetful_server.http_url
    await sse_all(url, with_id(request(max_tokens=4, seed=1), stream_id))
    assert len(await sse_all(url, resume(stream_id, 0))) >= 1  # within retention
    await asyncio.sleep(0.8)
    await assert_not_found(forgetful_server, stream_id)
