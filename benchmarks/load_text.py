"""Load generator for streamed text generation over REST SSE, gRPC and OpenAI SSE.

For each concurrency level N, N workers each stream `--requests` completions back to back
(closed loop) against a real `mlserver start model-repo`, and it reports aggregate
tokens/s, time to first token and inter-token latency (p50/p99), errors and hung streams.
With --transformers it also runs transformers' continuous batching
(`model.init_continuous_batching()`) on the same checkpoint, in-process.

    python benchmarks/load_text.py                       # 1,4,16,32,64 streams, REST and gRPC
    python benchmarks/load_text.py --levels 1 32 --transformers
    python benchmarks/load_text.py --levels 1 32 --transports openai rest --repeats 2
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import httpx
import mlserver.grpc.dataplane_pb2_grpc as dataplane
import uvloop
from common import (
    MODEL_REPO,
    child_pids,
    cpu_seconds,
    median,
    percentile,
    served,
    table,
    write_results,
)
from httpx_sse import aconnect_sse

PROMPTS = [
    "ROMEO:\n",
    "JULIET:\nO Romeo, Romeo!",
    "KING LEAR:\nBlow, winds,",
    "HAMLET:\nTo be, or not to be:",
    "First Citizen:\nBefore we proceed any further, hear me speak.",
    "MACBETH:\nIs this a dagger which I see before me,",
]


# The same decoding for the server and for transformers' continuous batching.
SAMPLING = {"temperature": 0.8, "top_k": 40, "top_p": 0.95, "repetition_penalty": 1.0}


@dataclass
class StreamStats:
    """What one streamed request saw on the client side."""

    tokens: int = 0
    ttft: float | None = None
    gaps: list[float] = field(default_factory=list)
    event_gaps: list[float] = field(default_factory=list)
    error: str | None = None
    hung: bool = False
    text: str = ""


def output_length(i: int, mean: int) -> int:
    """Request i's max_tokens: spread over [mean/2, 3*mean/2) so closed-loop clients do not
    finish (and come back) in lockstep, as with real output lengths."""
    return mean // 2 + (i * 37) % mean


def body(i: int, max_tokens: int, stream_interval: int = 0) -> dict:
    """Request i: a varied prompt, sampled, seeded, fixed length (no stop sequences)."""
    prompt = PROMPTS[i % len(PROMPTS)]
    params = {"max_tokens": output_length(i, max_tokens), **SAMPLING, "seed": i}
    if stream_interval:  # 0: the server's default (auto)
        params["stream_interval"] = stream_interval
    return {
        "inputs": [{"name": "prompt", "shape": [1], "datatype": "BYTES", "data": [prompt]}],
        "parameters": params,
    }


class Recorder:
    """Turns event arrivals into TTFT, per-token gaps and counts."""

    def __init__(self) -> None:
        self.stats = StreamStats()
        self.start = time.perf_counter()
        self.last = self.start

    def on_event(self, n_tokens: int, final: dict | None) -> None:
        now = time.perf_counter()
        if n_tokens:
            if self.stats.ttft is None:
                self.stats.ttft = now - self.start
            else:
                self.stats.gaps.extend([(now - self.last) / n_tokens] * n_tokens)
                self.stats.event_gaps.append(now - self.last)
            self.last = now
            self.stats.tokens += n_tokens
        if final is not None and final.get("finish_reason") == "error":
            self.stats.error = str(final.get("error"))


async def rest_stream(client: httpx.AsyncClient, url: str, request: dict) -> StreamStats:
    """One REST SSE stream."""
    rec = Recorder()
    async with aconnect_sse(client, "POST", url, json=request) as source:
        async for sse in source.aiter_sse():
            event = json.loads(sse.data)
            ids = next(o for o in event["outputs"] if o["name"] == "token_ids")["data"]
            params = event.get("parameters") or {}
            rec.on_event(len(ids), params if params.get("final") else None)
    return rec.stats


def openai_body(request: dict) -> dict:
    """The same request for /v1/completions (streamed, usage at the end)."""
    prompt = request["inputs"][0]["data"][0]
    extra = {"stream": True, "stream_options": {"include_usage": True}}
    return {"model": "shakespeare", "prompt": prompt, **request["parameters"], **extra}


async def openai_stream(client: httpx.AsyncClient, url: str, request: dict) -> StreamStats:
    """One OpenAI SSE stream. Chunks carry text, not token ids: the usage chunk gives the
    token count, spread evenly over the chunks for the inter-token gaps."""
    return await openai_sse(client, url, openai_body(request))


async def openai_sse(
    client: httpx.AsyncClient, url: str, payload: dict, empty_chunks: bool = True
) -> StreamStats:
    """One streamed `/v1/completions` (or chat) call with `payload` as its body, on any
    OpenAI-compatible server: the token count comes from whichever chunk carries `usage`
    (ours: a last chunk with `choices: []`; llama-server: its final choice). With
    `empty_chunks` false, chunks without text (llama-server's closing chunk) are not counted
    as arrivals. The text is kept in `StreamStats.text`."""
    start = time.perf_counter()
    arrivals: list[float] = []
    stats = StreamStats()
    parts: list[str] = []
    async with aconnect_sse(client, "POST", url, json=payload) as source:
        async for sse in source.aiter_sse():
            if sse.data == "[DONE]":
                break
            event = json.loads(sse.data)
            if "error" in event:
                stats.error = str(event["error"].get("message"))
                continue
            choices = event.get("choices") or []
            text = "".join(
                c.get("text") or (c.get("delta") or {}).get("content") or "" for c in choices
            )
            if choices and (empty_chunks or text):
                arrivals.append(time.perf_counter())
            parts.append(text)
            if event.get("usage"):
                stats.tokens = event["usage"]["completion_tokens"]
    stats.text = "".join(parts)
    if arrivals:
        stats.ttft = arrivals[0] - start
        per_chunk = stats.tokens / len(arrivals)
        for before, after in zip(arrivals, arrivals[1:], strict=False):
            stats.event_gaps.append(after - before)
            stats.gaps.extend([(after - before) / per_chunk] * max(1, round(per_chunk)))
    return stats


def grpc_request(request: dict):
    """The same request as a gRPC ModelInferRequest (floats as strings)."""
    import mlserver.grpc.dataplane_pb2 as pb

    msg = pb.ModelInferRequest(model_name="shakespeare")
    tensor = msg.inputs.add(name="prompt", datatype="BYTES", shape=[1])
    tensor.contents.bytes_contents.append(request["inputs"][0]["data"][0].encode())
    for key, value in request["parameters"].items():
        if isinstance(value, int):
            msg.parameters[key].int64_param = value
        else:
            msg.parameters[key].string_param = str(value)
    return msg


async def grpc_stream_one(stub, request: dict) -> StreamStats:
    """One gRPC ModelStreamInfer call with a single request."""
    rec = Recorder()

    async def requests():
        yield grpc_request(request)

    async for response in stub.ModelStreamInfer(requests()):
        ids = next(o for o in response.outputs if o.name == "token_ids")
        params = {
            k: getattr(v, v.WhichOneof("parameter_choice")) for k, v in response.parameters.items()
        }
        rec.on_event(len(ids.contents.int64_contents), params if params.get("final") else None)
    return rec.stats


async def guarded(coro, timeout: float) -> StreamStats:
    """A stream that errors or hangs is recorded as such, never raised."""
    try:
        return await asyncio.wait_for(coro, timeout)
    except TimeoutError:
        return StreamStats(hung=True)
    except Exception as err:  # noqa: BLE001
        return StreamStats(error=f"{type(err).__name__}: {err}")


async def run_level(
    server,
    transport: str,
    n: int,
    requests: int,
    max_tokens: int,
    timeout: float,
    stream_interval: int = 0,
) -> dict:
    """N closed-loop workers, each streaming `requests` completions in a row.

    Each worker is a client of its own: REST workers draw from a pool of N connections, gRPC
    workers each open a channel with its own connection (gRPC would otherwise multiplex every
    stream over one). Each worker connects before its first request is timed.
    """
    limits = httpx.Limits(max_connections=n + 8, max_keepalive_connections=n + 8)
    url = f"{server.http_url}/v2/models/shakespeare/generate_stream"
    own_connection = [("grpc.use_local_subchannel_pool", 1)]
    async with httpx.AsyncClient(timeout=timeout, limits=limits) as client:

        def bodies(w: int) -> list[dict]:
            return [body(w * requests + r, max_tokens, stream_interval) for r in range(requests)]

        async def rest_worker(w: int) -> list[StreamStats]:
            await client.get(f"{server.http_url}/v2/health/live")
            return [await guarded(rest_stream(client, url, req), timeout) for req in bodies(w)]

        async def grpc_worker(w: int) -> list[StreamStats]:
            async with grpc.aio.insecure_channel(server.grpc_target, own_connection) as channel:
                await channel.channel_ready()
                stub = dataplane.GRPCInferenceServiceStub(channel)
                return [await guarded(grpc_stream_one(stub, req), timeout) for req in bodies(w)]

        async def openai_worker(w: int) -> list[StreamStats]:
            await client.get(f"{server.http_url}/v2/health/live")
            completions = f"{server.http_url}/v1/completions"
            return [
                await guarded(openai_stream(client, completions, req), timeout) for req in bodies(w)
            ]

        worker = {"rest": rest_worker, "grpc": grpc_worker, "openai": openai_worker}[transport]

        cpu = CpuMeter(server.pid)
        start = time.perf_counter()
        results = [s for ws in await asyncio.gather(*(worker(w) for w in range(n))) for s in ws]
        wall = time.perf_counter() - start
        used = cpu.used()
    row = summarize(transport, n, results, wall)
    tokens = max(row["tokens"], 1)
    per_token = {f"cpu_{k}_us": round(v / tokens * 1e6) for k, v in used.items()}
    return {**row, "stream_interval": stream_interval, **per_token}


class CpuMeter:
    """CPU seconds used by MLServer's process, its engine process(es) and this client."""

    def __init__(self, server_pid: int | None) -> None:
        self.pids = {"server": [server_pid] if server_pid else []}
        self.pids["engine"] = child_pids(server_pid) if server_pid else []
        self.start = self._now()

    def _now(self) -> dict[str, float]:
        now = {k: sum(cpu_seconds(p) for p in pids) for k, pids in self.pids.items()}
        return {**now, "client": time.process_time()}

    def used(self) -> dict[str, float]:
        end = self._now()
        return {k: end[k] - self.start[k] for k in end}


def summarize(transport: str, n: int, results: list[StreamStats], wall: float) -> dict:
    """One row of the results table."""
    ttfts = [s.ttft for s in results if s.ttft is not None]
    gaps = [g for s in results for g in s.gaps]
    event_gaps = [g for s in results for g in s.event_gaps]
    tokens = sum(s.tokens for s in results)
    return {
        "transport": transport,
        "stream_interval": 0,
        "streams": n,
        "requests": len(results),
        "tokens": tokens,
        "wall_s": round(wall, 3),
        "tokens_per_s": round(tokens / wall, 1),
        "ttft_p50_ms": round(percentile(ttfts, 50) * 1e3, 1),
        "ttft_p99_ms": round(percentile(ttfts, 99) * 1e3, 1),
        "itl_p50_ms": round(percentile(gaps, 50) * 1e3, 2),
        "itl_p99_ms": round(percentile(gaps, 99) * 1e3, 2),
        "event_gap_p50_ms": round(percentile(event_gaps, 50) * 1e3, 2),
        "errors": sum(1 for s in results if s.error),
        "hung": sum(1 for s in results if s.hung),
    }


def transformers_cb(n: int, requests: int, max_tokens: int) -> dict:
    """transformers' continuous batching on the same checkpoint, in-process (no network)."""
    import torch
    from tokenizers import Tokenizer
    from transformers import GenerationConfig, GPT2LMHeadModel

    folder = MODEL_REPO / "shakespeare"
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    model = GPT2LMHeadModel.from_pretrained(folder, dtype=torch.float32).eval()
    config = GenerationConfig(
        max_new_tokens=max_tokens,
        do_sample=True,
        temperature=SAMPLING["temperature"],
        top_k=SAMPLING["top_k"],
        top_p=SAMPLING["top_p"],
        eos_token_id=-1,
        pad_token_id=0,
    )
    manager = model.init_continuous_batching(generation_config=config)
    manager.start()
    try:
        prompts = [tokenizer.encode(PROMPTS[i % len(PROMPTS)]).ids for i in range(n * requests)]
        manager.add_requests(prompts[:n], max_new_tokens=max_tokens)  # warm-up
        _drain(manager, n)
        # At most n requests in flight, like n closed-loop clients: a wave of n at a time.
        start, outputs, submitted = time.perf_counter(), [], 0
        for wave in range(requests):
            ids = range(wave * n, (wave + 1) * n)
            for i in ids:
                manager.add_request(
                    prompts[i],
                    max_new_tokens=output_length(i, max_tokens),
                    record_timestamps=True,
                    eos_token_id=-1,
                )
            submitted += len(ids)
            outputs += _drain(manager, len(ids))
        wall = time.perf_counter() - start
    finally:
        manager.stop(block=True)
    tokens = sum(len(o.generated_tokens) for o in outputs)
    ttfts = [o.timestamps[0] - o.created_time for o in outputs if o.timestamps]
    return {
        "transport": "transformers-cb",
        "stream_interval": "",
        "streams": n,
        "requests": len(outputs),
        "tokens": tokens,
        "wall_s": round(wall, 3),
        "tokens_per_s": round(tokens / wall, 1),
        "ttft_p50_ms": round(median(ttfts) * 1e3, 1),
        "errors": sum(1 for o in outputs if o.error),
        "hung": submitted - len(outputs),
    }


def _drain(manager, count: int, timeout: float = 600) -> list:
    done, deadline = [], time.monotonic() + timeout
    while len(done) < count and time.monotonic() < deadline:
        result = manager.get_result(timeout=1)
        if result is not None and result.is_finished():
            done.append(result)
    return done


def markdown(rows: list[dict]) -> str:
    """The results table for benchmarks/README.md."""
    cols = [
        "transport",
        "stream_interval",
        "streams",
        "requests",
        "tokens_per_s",
        "ttft_p50_ms",
        "ttft_p99_ms",
        "itl_p50_ms",
        "itl_p99_ms",
        "event_gap_p50_ms",
        "errors",
        "hung",
        "cpu_server_us",
        "cpu_engine_us",
        "cpu_client_us",
    ]
    shown = [
        {**r, "stream_interval": "auto" if r["stream_interval"] == 0 else r["stream_interval"]}
        for r in rows
    ]
    return table(cols, shown)


async def serve_and_load(args) -> list[dict]:
    """Each repeat: every server row, then transformers' rows while the server is idle."""
    rows = []
    with served(["shakespeare"], args.repo) as server:
        for repeat in range(args.repeats):
            for interval in args.stream_intervals:
                for transport in args.transports:
                    for n in args.levels:
                        row = await run_level(
                            server,
                            transport,
                            n,
                            args.requests,
                            args.max_tokens,
                            args.timeout,
                            interval,
                        )
                        rows.append({**row, "repeat": repeat})
                        print(json.dumps(rows[-1]), flush=True)
            if args.transformers:
                for n in (1, 32):
                    if n in args.levels:
                        row = transformers_cb(n, args.requests, args.max_tokens)
                        rows.append({**row, "repeat": repeat})
                        print(json.dumps(rows[-1]), flush=True)
    return rows


def medians(rows: list[dict]) -> list[dict]:
    """One row per (transport, stream_interval, streams): medians over the repeats; errors
    and hung streams summed."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["transport"], row["stream_interval"], row["streams"]), []).append(
            row
        )
    out = []
    for group in groups.values():
        merged = dict(group[0])
        for key, value in group[0].items():
            if key in ("errors", "hung", "requests", "tokens"):
                merged[key] = sum(r[key] for r in group)
            elif isinstance(value, int | float) and key not in (
                "streams",
                "stream_interval",
                "repeat",
            ):
                merged[key] = round(median([r[key] for r in group]), 2)
        merged["repeats"] = len(group)
        merged.pop("repeat", None)
        out.append(merged)
    return out


def ratios(rows: list[dict]) -> list[str]:
    """The issue's targets, from the median rows."""
    by = {(r["transport"], r["stream_interval"], r["streams"]): r for r in rows}
    cb32 = by.get(("transformers-cb", "", 32))
    lines = []
    for (transport, interval, n), row in by.items():
        if transport == "transformers-cb" or n != 32 or (transport, interval, 1) not in by:
            continue
        one = by[(transport, interval, 1)]
        text = (
            f"{transport} stream_interval={interval or 'auto'}: 32 vs 1 stream "
            f"{row['tokens_per_s'] / one['tokens_per_s']:.2f}x tokens/s, "
            f"TTFT p50 {row['ttft_p50_ms'] / one['ttft_p50_ms']:.2f}x"
        )
        if cb32 is not None:
            text += f", vs transformers CB at 32 {row['tokens_per_s'] / cb32['tokens_per_s']:.2f}x"
        lines.append(text)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 4, 16, 32, 64])
    parser.add_argument(
        "--transports", nargs="+", default=["rest", "grpc"], choices=["rest", "grpc", "openai"]
    )
    parser.add_argument("--requests", type=int, default=3, help="per worker, back to back")
    parser.add_argument("--max-tokens", type=int, default=64, help="mean output length")
    parser.add_argument("--timeout", type=float, default=120.0, help="a stream past it is hung")
    parser.add_argument("--transformers", action="store_true", help="also run transformers CB")
    parser.add_argument("--repeats", type=int, default=1, help="whole runs; medians reported")
    parser.add_argument(
        "--stream-intervals",
        type=int,
        nargs="+",
        default=[0],
        help="tokens per event to try (0: the server's default, auto)",
    )
    parser.add_argument("--repo", type=Path, default=MODEL_REPO, help="model repository to serve")
    args = parser.parse_args()

    # uvloop (MLServer's own loop) for the clients too: less of the shared CPU goes to them;
    # and no full collections over the imported modules stalling the clients mid-stream.
    gc.freeze()
    rows = uvloop.run(serve_and_load(args))
    table = medians(rows)
    print(markdown(table))
    print("\n".join(ratios(table)))
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    print("wrote", write_results("load_text", {"args": settings, "rows": rows, "medians": table}))


if __name__ == "__main__":
    main()
