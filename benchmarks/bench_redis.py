"""Redis mode against in-process serving: throughput, recovery from SIGKILL, resume latency.

On the `shakespeare` model (issue #11, section 6):

1. Served tokens/s and TTFT at 1 and 32 closed-loop REST SSE streams (`load_text.run_level`)
   for `mlserver start` in-process, and Redis mode with 1 and with 2 `mlserver-streaming
   worker` processes, each deployment started afresh in every round, the order rotating;
   CPU per generated token of the front end, the engine process or workers, redis-server.
2. Resume latency: a background stream read for two events, dropped, then resumed from
   event 0 while it still generates; request sent -> first event, on each deployment.
3. Kill recovery: 2 workers, a short lease; seeded background streams, the busiest worker
   SIGKILLed, every stream resumed from its last event seen and compared with an undisturbed
   run of the same request (indexes 0..n-1, same text and token ids); a worker restarted.

    cd benchmarks && ../.venv/bin/python bench_redis.py            # 3 rounds, 20 kills
    cd benchmarks && ../.venv/bin/python bench_redis.py --quick    # 1 round, 3 kills
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import signal
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import redis
import uvloop
from common import child_pids, cpu_seconds, median, percentile, table, write_results
from httpx_sse import aconnect_sse
from load_text import PROMPTS, medians, run_level

from mlserver_streaming.text.redis.codec import GROUP, REDIS_URL_ENV, model_keys
from tests.e2e.cluster import Worker, start_worker
from tests.e2e.conftest import one_model_repo
from tests.e2e.server import Server, running_server, stop_process
from tests.e2e.test_resume import completion, new_id, resume, with_id
from tests.e2e.test_text_generation import STREAM, request
from tests.redis_server import RedisServer, running_redis

MODEL = "shakespeare"
JOBS = model_keys(MODEL, "v1").jobs
CONFIGS = ["in-process", "redis-1w", "redis-2w"]
TIMEOUT = httpx.Timeout(120.0, connect=5.0)
SHORT_PROMPTS = PROMPTS[:5]
"""load_text's prompts that leave room for 240 new tokens (max_total_tokens 256)."""
LIVE_SPAN_MS = 50.0
"""A resumed tail that took longer than this was still being generated."""


@dataclass
class Deployment:
    """One running configuration: a front end, and in Redis mode its Redis and workers."""

    name: str
    server: Server
    folder: Path
    logs: Path
    redis: RedisServer | None = None
    workers: list[Worker] = field(default_factory=list)

    def pids(self) -> dict[str, list[int]]:
        """Processes whose CPU is counted, by role (the front end's own is run_level's)."""
        workers = [w.proc.pid for w in self.workers if w.proc.poll() is None]
        workers += [c for pid in workers for c in child_pids(pid)]
        return {"workers": workers, "redis": [self.redis.proc.pid] if self.redis else []}

    def restart(self, worker: Worker, name: str) -> None:
        """Replace a (killed) worker by a new one named `name`."""
        self.workers[self.workers.index(worker)] = start_worker(
            self.folder, self.redis.url, self.logs, name
        )


@contextlib.contextmanager
def deployment(name: str, workers: int, root: Path, **extra: object) -> Iterator[Deployment]:
    """Start `name` (0 workers: in-process) in a fresh folder under `root`; stop it all after."""
    base = Path(tempfile.mkdtemp(dir=root, prefix=f"{name}-"))
    (base / "repo").mkdir()
    repo = one_model_repo(base / "repo", MODEL, **extra)
    folder = repo / MODEL
    with contextlib.ExitStack() as stack:
        if not workers:
            server = stack.enter_context(running_server(repo, [MODEL], base))
            yield Deployment(name, server, folder, base)
            return
        redis_server = stack.enter_context(running_redis(base))
        procs: list[Worker] = []
        stack.callback(stop_workers, procs)  # the list as it is then: restarts included
        for i in range(workers):
            procs.append(start_worker(folder, redis_server.url, base, f"w{i}"))
        env = {REDIS_URL_ENV: redis_server.url}
        server = stack.enter_context(running_server(repo, [MODEL], base, **env))
        yield Deployment(name, server, folder, base, redis_server, procs)


def stop_workers(workers: list[Worker]) -> None:
    """Stop every worker, even when stopping one fails."""
    with contextlib.ExitStack() as stack:
        for worker in workers:
            stack.callback(stop_process, worker.proc)


def cpu_now(pids: dict[str, list[int]]) -> dict[str, float]:
    """CPU seconds used so far by each role's processes."""
    return {role: sum(cpu_seconds(p) for p in group) for role, group in pids.items()}


async def measure_level(dep: Deployment, n: int, requests: int, args) -> dict:
    """One closed-loop level on `dep`, with the CPU of its workers and Redis per token."""
    pids = dep.pids()
    each = {str(w.proc.pid): [w.proc.pid] for w in dep.workers}
    before, before_each = cpu_now(pids), cpu_now(each)
    row = await run_level(dep.server, "rest", n, requests, args.max_tokens, args.timeout)
    after, after_each = cpu_now(pids), cpu_now(each)
    tokens = max(row["tokens"], 1)
    for role in pids:
        row[f"cpu_{role}_us"] = round((after[role] - before[role]) / tokens * 1e6)
    # How the jobs spread over the workers: each one's CPU seconds during the level.
    row["cpu_each_worker_s"] = [round(after_each[k] - before_each[k], 2) for k in each]
    return {**row, "config": dep.name}


async def read_events(
    client: httpx.AsyncClient, body: dict, limit: int = -1
) -> list[tuple[float, dict]]:
    """(arrival time, event) of a POSTed SSE stream; after `limit` events the connection
    is dropped."""
    events: list[tuple[float, dict]] = []
    async with aconnect_sse(client, "POST", STREAM, json=body) as source:
        async for sse in source.aiter_sse():
            events.append((time.monotonic(), json.loads(sse.data)))
            if len(events) == limit:
                break
    return events


def index_of(event: dict) -> int:
    return event["parameters"]["event_index"]


def seeded(i: int, max_tokens: int, **params: object) -> dict:
    """Seeded, sampled request i on one of SHORT_PROMPTS."""
    prompt = SHORT_PROMPTS[i % len(SHORT_PROMPTS)]
    return request(prompt, max_tokens=max_tokens, temperature=0.9, seed=i, **params)


async def resume_latency(client: httpx.AsyncClient, i: int) -> dict:
    """Resume a live background stream from event 0: request sent -> first event."""
    stream_id = new_id()
    head = await read_events(client, with_id(seeded(i, 128, background=True), stream_id), 2)
    sent = time.monotonic()
    tail = await read_events(client, resume(stream_id, 0))
    joined = [index_of(e) for _, e in head[:1] + tail]
    final = tail[-1][1]["parameters"]
    span_ms = (tail[-1][0] - tail[0][0]) * 1e3
    return {
        "first_event_ms": (tail[0][0] - sent) * 1e3,
        "ok": joined == list(range(len(joined))) and final.get("finish_reason") == "length",
        # An ended stream's replay arrives at once; a live one's tail takes generating.
        "tail_span_ms": round(span_ms, 1),
        "live": span_ms > LIVE_SPAN_MS,
    }


async def run_round(dep: Deployment, round_no: int, args) -> tuple[list[dict], list[dict]]:
    """Warm-up, then 1 and 32 streams, then resume latencies on one deployment."""
    await run_level(dep.server, "rest", 4, 1, 16, args.timeout)  # warm-up, not recorded
    rows = []
    for n, requests in ((1, args.requests_1), (32, args.requests_32)):
        rows.append({**await measure_level(dep, n, requests, args), "repeat": round_no})
        print(json.dumps(rows[-1]), flush=True)
    resumes = []
    async with httpx.AsyncClient(base_url=dep.server.http_url, timeout=TIMEOUT) as client:
        await client.get("/v2/health/live")
        for k in range(args.resumes_per_round):
            sample = await resume_latency(client, 10_000 + round_no * 100 + k)
            resumes.append({**sample, "config": dep.name, "repeat": round_no})
    ms = [r["first_event_ms"] for r in resumes]
    print(f"{dep.name}: resume first event p50 {median(ms):.1f} ms", flush=True)
    return rows, resumes


async def throughput(args, root: Path) -> tuple[list[dict], list[dict]]:
    """Every configuration once per round, the order rotating between rounds."""
    rows: list[dict] = []
    resumes: list[dict] = []
    for round_no in range(args.repeats):
        order = CONFIGS[round_no % 3 :] + CONFIGS[: round_no % 3]
        for name in order:
            workers = {"in-process": 0, "redis-1w": 1, "redis-2w": 2}[name]
            with deployment(name, workers, root) as dep:
                got, res = await run_round(dep, round_no, args)
            rows += got
            resumes += res
    return rows, resumes


def owned_streams(client: redis.Redis) -> dict[str, list[str]]:
    """The stream ids of the jobs each worker (consumer) holds, from XPENDING."""
    owned: dict[str, list[str]] = {}
    for consumer in client.xinfo_consumers(JOBS, GROUP):
        name = consumer["name"].decode()
        pending = client.xpending_range(JOBS, GROUP, "-", "+", 1000, consumername=name)
        for entry in pending:
            message_id = entry["message_id"]
            for _, fields in client.xrange(JOBS, message_id, message_id):
                owned.setdefault(name, []).append(fields[b"stream"].decode())
    return owned


def logged_length(client: redis.Redis, stream_id: str) -> int:
    """Events in a stream's log right now."""
    last = client.xrevrange(model_keys(MODEL, "v1").events(stream_id), count=1)
    return int(last[0][0].decode().partition("-")[2]) if last else 0


def check_joined(events: list[dict], reference: list[dict]) -> dict:
    """Lost and duplicated indexes of a resumed stream, and whether it is the undisturbed one."""
    seen = [index_of(e) for e in events]
    final = events[-1]["parameters"]
    expected = set(range(index_of(events[-1]) + 1)) if final.get("final") else set()
    check = {
        "lost": len(expected - set(seen)) + (0 if final.get("final") else 1),
        "duplicated": len(seen) - len(set(seen)),
        "same": completion(events) == completion(reference),
        "finish_reason": final.get("finish_reason"),
    }
    if check["lost"] or check["duplicated"] or not check["same"]:  # kept for the JSON
        check.update(indexes=seen, final=final, reference_final=reference[-1]["parameters"])
        check.update(first_difference(completion(events)[1], completion(reference)[1]))
    return check


def first_difference(ids: list[int], reference: list[int]) -> dict:
    """Where two token id lists part, and a few ids of each from there."""
    at = next((i for i, (a, b) in enumerate(zip(ids, reference, strict=False)) if a != b), None)
    if at is None:
        at = min(len(ids), len(reference))
    return {
        "differs_at_token": at,
        "ids": ids[at : at + 5],
        "reference_ids": reference[at : at + 5],
    }


def kill_busiest(
    dep: Deployment, rc: redis.Redis, owned: dict[str, list[str]]
) -> tuple[Worker, float, dict[str, int]] | None:
    """SIGKILL the live worker holding the most jobs: it, when, and the length of each of
    its streams' logs then (None if no live worker holds a job)."""
    alive = {w.name: w for w in dep.workers if w.proc.poll() is None}
    busy = {name: streams for name, streams in owned.items() if name in alive and streams}
    if not busy:
        return None
    victim = alive[max(busy, key=lambda n: len(busy[n]))]
    os.killpg(victim.proc.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    victim.proc.wait(timeout=30)
    return victim, killed_at, {sid: logged_length(rc, sid) for sid in busy[victim.name]}


async def kill_once(dep: Deployment, client: httpx.AsyncClient, rc: redis.Redis, k: int, args):
    """One kill: references, background heads, SIGKILL of the busiest worker, resumes."""
    seeds = [1000 + k * args.streams + i for i in range(args.streams)]
    references = await asyncio.gather(
        *(read_events(client, seeded(s, args.kill_tokens)) for s in seeds)
    )
    ids = [new_id() for _ in seeds]
    heads = await asyncio.gather(
        *(
            read_events(client, with_id(seeded(s, args.kill_tokens, background=True), i), args.head)
            for s, i in zip(seeds, ids, strict=True)
        )
    )
    owned = owned_streams(rc)
    killed = kill_busiest(dep, rc, owned)
    if killed is None:
        return {"kill": k, "skipped": "no worker held a job when it came to the kill"}
    victim, killed_at, at_kill = killed
    tails = await asyncio.gather(
        *(
            read_events(client, resume(sid, index_of(h[-1][1])))
            for sid, h in zip(ids, heads, strict=True)
        )
    )
    continued = []
    for sid, tail in zip(ids, tails, strict=True):
        if sid in at_kill:
            after = [t for t, e in tail if index_of(e) >= at_kill[sid]]
            continued.append(round(after[0] - killed_at, 3) if after else None)
    checks = [
        {"stream": sid, "victims": sid in at_kill, "head": len(head), **check}
        for sid, head, tail, ref in zip(ids, heads, tails, references, strict=True)
        for check in [check_joined([e for _, e in head + tail], [e for _, e in ref])]
    ]
    dep.restart(victim, f"k{k}")
    return {
        "kill": k,
        "victim": victim.name,
        "owned": {n: len(s) for n, s in owned.items()},
        "victim_streams": len(at_kill),
        "continued_s": continued,
        "lost": sum(c["lost"] for c in checks),
        "duplicated": sum(c["duplicated"] for c in checks),
        "differ": sum(not c["same"] for c in checks),
        "finish_reasons": sorted({str(c["finish_reason"]) for c in checks}),
        "problems": [c for c in checks if "indexes" in c],
    }


async def kills(args, root: Path) -> list[dict]:
    """`args.kills` rounds of kill_once on one deployment with a short lease."""
    out = []
    with deployment("kill", 2, root, redis_lease_s=args.lease) as dep:
        rc = redis.Redis.from_url(dep.redis.url)
        limits = httpx.Limits(max_connections=2 * args.streams + 4)
        try:
            async with httpx.AsyncClient(
                base_url=dep.server.http_url, timeout=TIMEOUT, limits=limits
            ) as client:
                for k in range(args.kills):
                    try:
                        out.append(await kill_once(dep, client, rc, k, args))
                    except redis.RedisError as err:  # recorded as skipped, and shown
                        out.append({"kill": k, "skipped": f"{type(err).__name__}: {err}"})
                        for dead in [w for w in dep.workers if w.proc.poll() is not None]:
                            dep.restart(dead, f"k{k}")
                    print(json.dumps(out[-1]), flush=True)
        finally:
            rc.close()
    return out


THROUGHPUT_COLS = [
    "config",
    "streams",
    "requests",
    "tokens_per_s",
    "ttft_p50_ms",
    "ttft_p99_ms",
    "itl_p50_ms",
    "itl_p99_ms",
    "errors",
    "hung",
    "cpu_server_us",
    "cpu_engine_us",
    "cpu_workers_us",
    "cpu_redis_us",
    "cpu_client_us",
]


def throughput_summary(rows: list[dict]) -> tuple[list[dict], list[dict]]:
    """Median rows per (config, streams), and Redis / in-process tokens/s at 32 streams:
    the median of the per-round ratios and the ratio of the medians."""
    table_rows = [m for name in CONFIGS for m in medians([r for r in rows if r["config"] == name])]
    by = {(r["config"], r["streams"]): r for r in table_rows}
    ratios = []
    for name in CONFIGS[1:]:
        for n in (1, 32):
            per_round = []
            for r in rows:
                if r["config"] == name and r["streams"] == n:
                    base = next(
                        b
                        for b in rows
                        if (b["config"], b["streams"], b["repeat"])
                        == ("in-process", n, r["repeat"])
                    )
                    per_round.append(round(r["tokens_per_s"] / base["tokens_per_s"], 2))
            ratios.append(
                {
                    "config": name,
                    "streams": n,
                    "per_round": per_round,
                    "median_of_rounds": round(median(per_round), 2),
                    "of_medians": round(
                        by[(name, n)]["tokens_per_s"] / by[("in-process", n)]["tokens_per_s"], 2
                    ),
                }
            )
    return table_rows, ratios


def resume_summary(samples: list[dict]) -> list[dict]:
    """Resume latency per configuration."""
    out = []
    for name in CONFIGS:
        ms = [s["first_event_ms"] for s in samples if s["config"] == name]
        out.append(
            {
                "config": name,
                "samples": len(ms),
                "p50_ms": round(percentile(ms, 50), 1),
                "p90_ms": round(percentile(ms, 90), 1),
                "max_ms": round(max(ms), 1) if ms else "",
                "complete": sum(s["ok"] for s in samples if s["config"] == name),
                "live_when_resumed": sum(s["live"] for s in samples if s["config"] == name),
            }
        )
    return out


def kill_summary(rounds: list[dict], lease: float) -> dict:
    """Recovery time over every stream of every killed worker, and the totals."""
    done = [r for r in rounds if "skipped" not in r]
    times = [t for r in done for t in r["continued_s"] if t is not None]
    never = sum(t is None for r in done for t in r["continued_s"])
    return {
        "kills": len(done),
        "skipped": len(rounds) - len(done),
        "lease_s": lease,
        "streams": sum(len(r["continued_s"]) for r in done),
        "continued_p50_s": round(median(times), 2),
        "continued_max_s": round(max(times), 2) if times else "",
        "no_new_event": never,
        "lost": sum(r["lost"] for r in done),
        "duplicated": sum(r["duplicated"] for r in done),
        "differ": sum(r["differ"] for r in done),
        "finish_reasons": sorted({f for r in done for f in r["finish_reasons"]}),
    }


def report(rows, ratios, resumes, killed) -> str:
    """Every table, markdown."""
    parts = [
        table(THROUGHPUT_COLS, rows) if rows else "",
        table(list(ratios[0]), ratios) if ratios else "",
        table(list(resumes[0]), resumes) if resumes else "",
        table(list(killed), [killed]) if killed else "",
    ]
    return "\n\n".join(p for p in parts if p)


async def run(args, root: Path) -> dict:
    rows, samples = await throughput(args, root) if args.repeats else ([], [])
    killed = await kills(args, root) if args.kills else []
    return {"rows": rows, "resume_samples": samples, "kill_rounds": killed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="1 round, 3 kills, fewer requests")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of every configuration")
    parser.add_argument("--kills", type=int, default=20, help="worker kills (0: none)")
    parser.add_argument("--requests-1", type=int, default=12, help="requests at 1 stream")
    parser.add_argument("--requests-32", type=int, default=4, help="requests per client at 32")
    parser.add_argument("--max-tokens", type=int, default=64, help="mean output length")
    parser.add_argument("--resumes", type=int, default=21, help="resume samples per config")
    parser.add_argument("--lease", type=float, default=2.0, help="redis_lease_s for the kills")
    parser.add_argument("--streams", type=int, default=8, help="background streams per kill")
    parser.add_argument("--kill-tokens", type=int, default=240, help="max_tokens of those")
    parser.add_argument("--head", type=int, default=4, help="events read before the kill")
    parser.add_argument("--timeout", type=float, default=120.0, help="a stream past it is hung")
    parser.add_argument("--logs", type=Path, help="keep every process's log here")
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.kills, args.resumes = 1, 3, 5
        args.requests_1, args.requests_32 = 4, 2
    args.resumes_per_round = -(-args.resumes // max(args.repeats, 1))

    gc.freeze()  # as load_text: no full collections stalling the clients mid-stream
    with contextlib.ExitStack() as stack:
        if args.logs is None:
            args.logs = Path(
                stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-redis-"))
            )
        args.logs.mkdir(parents=True, exist_ok=True)
        results = uvloop.run(run(args, args.logs))
    rows, ratios = throughput_summary(results["rows"]) if results["rows"] else ([], [])
    resumes = resume_summary(results["resume_samples"]) if results["resume_samples"] else []
    killed = kill_summary(results["kill_rounds"], args.lease) if results["kill_rounds"] else {}
    print(report(rows, ratios, resumes, killed))
    summary = {"medians": rows, "ratios": ratios, "resume": resumes, "kill": killed}
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    print("wrote", write_results("bench_redis", {"args": settings, **summary, **results}))


if __name__ == "__main__":
    main()
