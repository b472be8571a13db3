"""Redis mode end to end: a real redis-server, two `mlserver-streaming worker` processes and
two `mlserver start` front ends; workers killed with SIGKILL mid-stream, a front end killed,
Redis restarted. Every stream is compared, event by event, with an undisturbed run."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest
import redis
from httpx_sse import aconnect_sse

from mlserver_streaming.text.redis.codec import GROUP, model_keys

from ..redis_server import RedisServer, running_redis
from .clients import TIMEOUT, SSEReader, params_of
from .cluster import Worker, running_workers, start_worker
from .conftest import one_model_repo
from .engines import Pause, run_until
from .server import Server, running_server
from .test_resume import completion, get_sse, grpc_all, indexes, new_id, resume, sse_all
from .test_resume import with_id as with_stream_id
from .test_text_generation import INFER, MODEL, STREAM, output, request

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

LEASE_S = 2.0
TIMEOUT_S = 15.0
MAX_WAITING = 12
KEYS = model_keys(MODEL, "v1")
_names = itertools.count()


@dataclass
class Cluster:
    redis: RedisServer
    folder: Path
    logs: Path
    workers: list[Worker]
    a: Server
    b: Server

    def restart_worker(self, index: int) -> None:
        self.workers[index] = start_worker(self.folder, self.redis.url, self.logs, new_name())


def paused_workers(cluster: Cluster) -> Pause:
    """Every worker (its process group: the worker and its engine), to pause and resume."""
    return Pause([worker.proc.pid for worker in cluster.workers], groups=True)


def new_name() -> str:
    return f"r{next(_names)}"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("cluster")
    extra = {"redis_lease_s": LEASE_S, "request_timeout_s": TIMEOUT_S, "max_waiting": MAX_WAITING}
    repo = one_model_repo(tmp_path_factory.mktemp("repo"), MODEL, **extra)
    folder = repo / MODEL
    with running_redis(root) as server:
        env = {"MLSERVER_STREAMING_REDIS_URL": server.url}
        with (
            running_workers(folder, server.url, root, 2) as workers,
            running_server(repo, [MODEL], root, **env) as a,
            running_server(repo, [MODEL], root, **env) as b,
        ):
            yield Cluster(server, folder, root, workers, a, b)


def seeded(i: int, **params) -> dict:
    return request("ROMEO:", max_tokens=240, seed=1000 + i, temperature="0.9", **params)


def owners(url: str) -> dict[str, int]:
    """Jobs in flight by worker (consumer name)."""
    client = redis.Redis.from_url(url)
    try:
        return {
            c["name"].decode(): int(c["pending"]) for c in client.xinfo_consumers(KEYS.jobs, GROUP)
        }
    finally:
        client.close()


async def test_a_seeded_stream_on_the_workers_is_the_in_process_one(cluster, server):
    body = request("JULIET:", max_tokens=40, seed=7, temperature="0.9")
    remote, local = await sse_all(cluster.a.http_url, body), await sse_all(server.http_url, body)
    assert completion(remote) == completion(local)
    assert indexes(remote) == list(range(len(remote)))


async def test_unary_grpc_and_openai_requests_run_on_the_workers(cluster):
    body = request("JULIET:", max_tokens=24, seed=8, temperature="0.9")
    streamed = completion(await sse_all(cluster.b.http_url, body))
    async with httpx.AsyncClient(base_url=cluster.a.http_url, timeout=TIMEOUT) as client:
        unary = (await client.post(INFER, json=body)).json()
    assert output(unary, "text")[0] == streamed[0]
    assert completion(await grpc_all(cluster.a.grpc_target, body)) == streamed
    sdk = openai.AsyncOpenAI(base_url=f"{cluster.b.http_url}/v1", api_key="none")
    chunks = await sdk.completions.create(
        model=MODEL, prompt="JULIET:", max_tokens=24, seed=8, temperature=0.9, stream=True
    )
    assert "".join([c.choices[0].text async for c in chunks]) == streamed[0]
    await sdk.close()


async def test_workers_expose_the_generation_metrics(cluster):
    await sse_all(cluster.a.http_url, request("JULIET:", max_tokens=12, seed=3))
    totals = {"generation_tokens_total": 0.0, "time_to_first_token_seconds_count": 0.0}
    async with httpx.AsyncClient(timeout=TIMEOUT) as client:
        for worker in cluster.workers:
            for line in (await client.get(worker.metrics_url)).text.splitlines():
                for name in totals:
                    if line.startswith(f"mlserver_streaming:{name}{{") and MODEL in line:
                        totals[name] += float(line.rsplit(" ", 1)[1])
    assert totals["generation_tokens_total"] >= 12
    assert totals["time_to_first_token_seconds_count"] >= 1


@pytest.mark.parametrize(
    "how", [signal.SIGKILL, signal.SIGTERM, signal.SIGSTOP], ids=["sigkill", "sigterm", "paused"]
)
async def test_a_dying_workers_streams_continue_on_another_with_the_same_text(cluster, how):
    # SIGSTOP: a worker paused past its lease loses its jobs to another, and when it wakes
    # its writes are refused (each event index is written once): still no duplicate.
    count, head = 8, 4
    reference = await asyncio.gather(
        *(sse_all(cluster.a.http_url, seeded(i)) for i in range(count))
    )
    ids = [new_id() for _ in range(count)]
    # The workers run a few ms at a time until every head is in: then the streams are all
    # mid-way, whatever the machine's speed, and stay so until a worker is let go again.
    workers = paused_workers(cluster)
    with workers.held():
        readers = [
            SSEReader(cluster.a.http_url, STREAM, with_stream_id(seeded(i, background=True), sid))
            for i, sid in enumerate(ids)
        ]
        await run_until(workers, lambda: all(r.has(head)() for r in readers), "every head")
        heads = [(await r.disconnect())[:head] for r in readers]
        busy = {name: n for name, n in owners(cluster.redis.url).items() if n}
        assert busy, f"the streams ended before a worker could be stopped: {heads}"
        victim = next(i for i, worker in enumerate(cluster.workers) if worker.name in busy)
        worker = cluster.workers[victim]
        os.killpg(worker.proc.pid, how)  # delivered (SIGTERM handled) once it is continued
        if how == signal.SIGSTOP:
            workers.pids.remove(worker.proc.pid)  # it stays paused past its lease
    if how != signal.SIGSTOP:
        worker.proc.wait(timeout=30)
    # The rest of each stream, from its last event seen, on the other front end.
    tails = await asyncio.gather(
        *(sse_all(cluster.b.http_url, resume(sid, head - 1)) for sid in ids)
    )
    if how == signal.SIGSTOP:
        os.killpg(worker.proc.pid, signal.SIGCONT)
        log = cluster.logs / f"worker-{worker.name}.log"
        deadline = time.monotonic() + 60
        while "taken over" not in log.read_text() and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert "taken over" in log.read_text()
        again = await asyncio.gather(*(sse_all(cluster.b.http_url, resume(sid)) for sid in ids))
        assert [e["outputs"] for t in again for e in t] == [
            e["outputs"] for h, t in zip(heads, tails, strict=True) for e in h + t
        ]
    else:
        cluster.restart_worker(victim)
    for before, after, whole in zip(heads, tails, reference, strict=True):
        joined = before + after
        assert indexes(joined) == list(range(len(joined)))  # no duplicate, no gap
        # The undisturbed text and ids: the other worker reclaimed the jobs (within their
        # deadline; else the front end would have ended them `timeout`).
        assert completion(joined) == completion(whole)


async def test_a_stream_whose_front_end_died_resumes_on_another(cluster, tmp_path):
    stream_id = new_id()
    body = seeded(20)
    reference = await sse_all(cluster.a.http_url, body)
    repo_env = {"MLSERVER_STREAMING_REDIS_URL": cluster.redis.url}
    head: list[dict] = []
    with running_server(cluster.folder.parent, [MODEL], tmp_path, **repo_env) as doomed:
        async with (
            httpx.AsyncClient(base_url=doomed.http_url, timeout=TIMEOUT) as client,
            aconnect_sse(client, "POST", STREAM, json=with_stream_id(body, stream_id)) as source,
        ):
            async for sse in source.aiter_sse():
                head.append(json.loads(sse.data))
                if len(head) == 3:
                    os.killpg(doomed.pid, signal.SIGKILL)  # while the client still reads
                    break
    tail = await get_sse(cluster.b.http_url, stream_id, {"Last-Event-ID": "2"})
    joined = head + [event for _, event in tail]
    assert [line for line, _ in tail] == [str(i) for i in range(3, len(joined))]
    text, ids, final = completion(joined)
    assert (text, ids) == completion(reference)[:2] and final["finish_reason"] == "length"


async def cancel_recorded(cluster: Cluster, stream_id: str) -> None:
    """Wait until a front end has recorded the stream's cancel in Redis."""
    client = redis.Redis.from_url(cluster.redis.url)
    try:
        async with asyncio.timeout(60):
            while not client.exists(KEYS.cancelled(stream_id)):
                await asyncio.sleep(0.02)
    finally:
        client.close()


async def test_a_disconnect_cancels_through_redis_without_background(cluster):
    stream_id = new_id()
    # Paused workers: the stream cannot reach its end before the cancel is on its way.
    workers = paused_workers(cluster)
    with workers.held():
        reader = SSEReader(cluster.a.http_url, STREAM, with_stream_id(seeded(31), stream_id))
        await run_until(workers, reader.has(3), "three events")
        await reader.disconnect()
        await cancel_recorded(cluster, stream_id)
    events = await sse_all(cluster.b.http_url, resume(stream_id, 2))
    final = params_of(events[-1])
    assert final["finish_reason"] == "cancelled" and final["completion_tokens"] < 240


async def test_cancel_on_one_front_end_ends_a_stream_read_on_another(cluster):
    stream_id = new_id()
    workers = paused_workers(cluster)
    with workers.held():
        body = with_stream_id(seeded(30, background=True), stream_id)
        reader = SSEReader(cluster.a.http_url, STREAM, body)
        await run_until(workers, reader.has(2), "two events")
        await reader.disconnect()
        async with httpx.AsyncClient(base_url=cluster.b.http_url, timeout=TIMEOUT) as client:
            answer = await client.post(f"/v2/streams/{stream_id}/cancel")
        assert answer.status_code == 200 and answer.json()["id"] == stream_id
        await cancel_recorded(cluster, stream_id)
    events = await sse_all(cluster.a.http_url, resume(stream_id, 1))
    final = params_of(events[-1])
    assert final["finish_reason"] == "cancelled" and final["completion_tokens"] < 240
    assert indexes(events) == list(range(2, 2 + len(events)))


async def test_without_workers_the_queue_is_bounded_and_queued_streams_time_out(cluster):
    for worker in cluster.workers:
        os.killpg(worker.proc.pid, signal.SIGTERM)
        worker.proc.wait(timeout=30)
    jobs = redis.Redis.from_url(cluster.redis.url)
    try:
        queued = jobs.xlen(KEYS.jobs)
        readers = [
            asyncio.ensure_future(sse_all(cluster.a.http_url, seeded(i)))
            for i in range(MAX_WAITING - queued)
        ]
        while jobs.xlen(KEYS.jobs) < MAX_WAITING:
            await asyncio.sleep(0.05)
        (refused,) = await sse_all(cluster.b.http_url, seeded(99))
        final = params_of(refused)
        assert final["finish_reason"] == "error" and final["retryable"] is True
        assert f"max_waiting={MAX_WAITING}" in final["error"]
        # No worker will ever end them: the front ends do, at the deadline.
        for events in await asyncio.gather(*readers):
            (ended,) = events
            final = params_of(ended)
            assert final["finish_reason"] == "timeout" and "deadline" in final["error"]
            assert final["completion_tokens"] == 0 and final["event_index"] == 0
            # Ended soon after the deadline, as the front end measured it (not the client:
            # its own clock also counts how long this loaded machine took to read).
            late = float(re.search(r"\(([0-9.]+) s past it\)", final["error"]).group(1))
            assert late < TIMEOUT_S, final["error"]
    finally:
        jobs.close()
        for index in range(len(cluster.workers)):
            cluster.restart_worker(index)


async def test_redis_restarting_ends_streams_with_a_retryable_error_and_then_serves_again(cluster):
    stream_id = new_id()
    workers = paused_workers(cluster)  # the stream stays unfinished while Redis goes away
    workers.pause()
    try:
        body = with_stream_id(seeded(40, background=True), stream_id)
        writer = SSEReader(cluster.a.http_url, STREAM, body)
        await run_until(workers, writer.has(2), "two events")
        head = (await writer.disconnect())[:2]
        # A reader on the other front end, attached: it has had the log's event 1.
        reading = SSEReader(cluster.b.http_url, STREAM, resume(stream_id, 0))
        await reading.until(reading.has(1), "the reader's first event")
        cluster.redis.stop()
        try:
            events = await asyncio.wait_for(reading.result(), 60)
            final = params_of(events[-1])
            assert final["finish_reason"] == "error" and final["retryable"] is True
            assert "redis unavailable" in final["error"] and final["event_index"] >= len(head)
            (refused,) = await sse_all(cluster.a.http_url, seeded(41))
            assert params_of(refused)["retryable"] is True
            async with httpx.AsyncClient(base_url=cluster.a.http_url, timeout=TIMEOUT) as client:
                unary = await client.post(INFER, json=request(max_tokens=4))
            assert unary.status_code == 503 and "redis unavailable" in unary.json()["error"]
        finally:
            cluster.redis.start()
    finally:
        workers.resume()
    body = request("JULIET:", max_tokens=16, seed=9)
    deadline = time.monotonic() + 60
    while True:  # front ends and workers reconnect by themselves
        events = await sse_all(cluster.b.http_url, body)
        if params_of(events[-1])["finish_reason"] == "length" or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    assert params_of(events[-1])["finish_reason"] == "length"
    assert len([t for e in events for t in output(e, "token_ids")]) == 16
