#!/usr/bin/env python
"""Served tokens/s and TTFT: ours on llama.cpp vs llama-server vs our numpy engine.

Every server is started by the benchmark on free 127.0.0.1 ports and stopped after its turn:

- ``ours-llama``: ``mlserver start`` on a temporary model repository holding one
  TextGenerator whose ``parameters.uri`` is the GGUF (the llama.cpp engine), with
  ``parameters.extra.threads`` set when ``--threads`` asks for it;
- ``llama-server``: llama.cpp's server (``benchmarks/build_llama_server.sh``) on the same GGUF,
  ``-np 32 -c 32*n_ctx_train --cont-batching -t T -tb T --no-webui``;
- ``ours-numpy``: ``mlserver start`` on the same weights as a safetensors GPT-2 folder.

All are driven by the same client (``load_text.py``'s closed loop: N workers each stream
``--requests`` completions back to back, output lengths spread over [mean/2, 3·mean/2)), over
the same route, ``/v1/completions`` with ``stream: true`` (usage in the last chunk), greedy
(``temperature: 0``, no repetition penalty), same prompts, same ``max_tokens``. A request may
end early at EOS: the same greedy tokens on every server (the ``same_text`` column counts how
many completions equal those of the first server of their model). Each repeat runs every
server of every model once, the servers' order rotating from repeat to repeat, and the table
holds medians over repeats; ratios are medians of the per-repeat ratios.

    .venv/bin/python benchmarks/bench_llama_served.py --repeats 3
    .venv/bin/python benchmarks/bench_llama_served.py --models shakespeare --repeats 1
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import MODEL_REPO, ROOT, median, served, write_results  # noqa: E402
from load_text import (  # noqa: E402
    PROMPTS,
    CpuMeter,
    StreamStats,
    guarded,
    openai_sse,
    output_length,
    summarize,
)

from tests.e2e.server import (
    free_ports,  # noqa: E402
    stop_process,  # noqa: E402
)

CACHE = ROOT / "benchmarks" / ".cache"
LLAMA_SERVER = CACHE / "llama-server" / "bin" / "llama-server"
LLAMA_SERVER_ARGS: list[str] = []  # --llama-server-args
LLAMA_BODY: dict = {"repeat_penalty": 1.0}  # --no-cache-prompt adds cache_prompt: false
DISTINCT: list[bool] = [False]  # --distinct-prompts: no two requests share a prefix
GGUF_88M = CACHE / "gguf-88m"
SHAKESPEARE_GGUF = MODEL_REPO / "shakespeare-gguf"


@dataclass(frozen=True)
class Case:
    """One server on one model file."""

    model: str  # "shakespeare" | "88m"
    weights: str  # "f16" | "f32" | "q8_0"
    server: str  # "ours-llama" | "llama-server" | "ours-numpy"
    path: Path  # the GGUF, or the safetensors folder for ours-numpy
    threads: int | None = None  # None: ours' default; llama-server gets the same number
    n_ctx: int = 0  # context per slot (the model's n_ctx_train)

    @property
    def label(self) -> str:
        threads = "default" if self.threads is None else str(self.threads)
        return f"{self.model} {self.weights} {self.server} t={threads}"


@dataclass
class Served:
    """A running server: where to send requests, and whose CPU to count."""

    url: str
    model_name: str
    pid: int
    extra_body: dict = field(default_factory=dict)


def find_gguf(folder: Path, pattern: str) -> Path:
    """The shipped GGUF wherever the repository keeps it (flat or in version subfolders)."""
    found = sorted(folder.rglob(pattern))
    if not found:
        raise FileNotFoundError(f"no {pattern} under {folder}")
    return found[0]


def default_threads() -> int:
    """Ours' default (the engine's own rule), for llama-server's -t."""
    from mlserver_streaming.engine.llama_lib import default_threads as engine_default

    return engine_default()


def n_ctx_train(gguf: Path) -> int:
    """The model's training context, read from the GGUF metadata."""
    import gguf as gguf_py

    reader = gguf_py.GGUFReader(gguf)
    arch = reader.get_field("general.architecture").contents()
    return int(reader.get_field(f"{arch}.context_length").contents())


def cases(models: list[str], threads: list[int]) -> dict[str, list[Case]]:
    """The servers compared for each model; ours-llama also at each of `threads` (Q8_0)."""
    threads = [t for t in threads if t != default_threads()]
    out: dict[str, list[Case]] = {}
    files = {}
    if "shakespeare" in models:
        files["shakespeare"] = (
            [
                ("f16", find_gguf(SHAKESPEARE_GGUF, "*-f16.gguf")),
                ("q8_0", find_gguf(SHAKESPEARE_GGUF, "*-q8_0.gguf")),
            ],
            MODEL_REPO / "shakespeare",
        )
    if "88m" in models:
        files["88m"] = (
            [("f32", GGUF_88M / "gpt2-88m-f32.gguf"), ("q8_0", GGUF_88M / "gpt2-88m-q8_0.gguf")],
            GGUF_88M / "hf",
        )
    for model, (ggufs, folder) in files.items():
        group = []
        for weights, path in ggufs:
            ctx = n_ctx_train(path)
            group.append(Case(model, weights, "ours-llama", path, None, ctx))
            group.append(Case(model, weights, "llama-server", path, None, ctx))
            if weights == "q8_0":
                group += [Case(model, weights, "ours-llama", path, t, ctx) for t in threads]
        # (threads equal to the default are not run twice: the default row is that case)
        # The safetensors hold the first GGUF's numbers (shakespeare: fp16, 88M: f32); numpy
        # computes in f32 either way.
        group.append(Case(model, ggufs[0][0], "ours-numpy", folder))
        out[model] = group
    return out


# ---------------------------------------------------------------------------------- servers


OURS_EXTRA: dict = {}  # --ours-extra: more parameters.extra for every ours-llama server
SERVER_EXTRA: dict[str, dict] = {}  # and for one server by name (ab_llama_served's --tree-extra)


def key_json(item: str) -> tuple[str, object]:
    """KEY=JSON, as the command lines give parameters.extra."""
    key, _, value = item.partition("=")
    return key, json.loads(value)


def shipped_kv_unified() -> bool:
    """The KV layout shakespeare-gguf ships with (its model-settings.json). The 88M file is
    not shipped: it runs on the setting's default (split since 331040a, 2026-12-02), as any GGUF
    folder would."""
    shipped = json.loads((SHAKESPEARE_GGUF / "f16" / "model-settings.json").read_text())
    return bool(shipped["parameters"]["extra"].get("kv_unified", True))


def model_settings(case: Case, name: str) -> dict:
    """model-settings.json of the temporary repository: shakespeare's serving settings."""
    extra: dict = {
        "max_running": 32,
        "max_waiting": 64,
        "max_tokens_cap": 256,
        "request_timeout_s": 120,
        "prefill_chunk_tokens": 128,
        "warmup_tokens": 4,
        "defaults": {"max_tokens": 64, "temperature": 0.0, "repetition_penalty": 1.0},
    }
    if case.server == "ours-numpy":
        extra["prepend_bos"] = True  # a GGUF says it itself (add_bos_token)
        uri = "."
    else:
        uri = f"./{case.path.name}"
        if case.model == "shakespeare":
            extra["kv_unified"] = shipped_kv_unified()
        if case.threads is not None:
            extra["threads"] = case.threads
        extra.update(OURS_EXTRA)
        extra.update(SERVER_EXTRA.get(case.server, {}))
    return {
        "name": name,
        "implementation": "mlserver_streaming.TextGenerator",
        "platform": "mlserver-streaming",
        "inputs": [{"name": "prompt", "datatype": "BYTES", "shape": [1]}],
        "outputs": [
            {"name": "text", "datatype": "BYTES", "shape": [1]},
            {"name": "token_ids", "datatype": "INT64", "shape": [-1]},
        ],
        "parameters": {"uri": uri, "version": case.weights, "extra": extra},
    }


@contextlib.contextmanager
def ours(case: Case) -> Iterator[Served]:
    """`mlserver start` on a temporary repository with one model, files symlinked in."""
    name = "bench"
    with tempfile.TemporaryDirectory(prefix="bench-llama-served-") as tmp:
        repo = Path(tmp)
        shutil.copy2(MODEL_REPO / "settings.json", repo / "settings.json")
        folder = repo / name
        folder.mkdir()
        if case.server == "ours-numpy":
            for f in ("config.json", "model.safetensors", "tokenizer.json"):
                (folder / f).symlink_to(case.path / f)
        else:
            (folder / case.path.name).symlink_to(case.path)
        (folder / "model-settings.json").write_text(json.dumps(model_settings(case, name)))
        with served([name], repo) as srv:
            assert srv.pid is not None
            yield Served(srv.http_url, name, srv.pid, {"repetition_penalty": 1.0})


@contextlib.contextmanager
def llama_server(case: Case, threads: int, slots: int) -> Iterator[Served]:
    """llama.cpp's server on the GGUF, `slots` parallel sequences of n_ctx_train tokens."""
    if not LLAMA_SERVER.is_file():
        raise FileNotFoundError(f"{LLAMA_SERVER} missing: run benchmarks/build_llama_server.sh")
    (port,) = free_ports(1)
    cmd = [str(LLAMA_SERVER), "-m", str(case.path), "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["-np", str(slots), "-c", str(slots * case.n_ctx), "--cont-batching", "--no-webui"]
    cmd += ["-t", str(threads), "-tb", str(threads), "-a", "bench", *LLAMA_SERVER_ARGS]
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 120
            with httpx.Client(timeout=2.0) as client:
                while True:
                    if proc.poll() is not None:
                        log.seek(0)
                        raise RuntimeError(f"llama-server exited: {log.read().decode()[-3000:]}")
                    with contextlib.suppress(httpx.HTTPError):
                        if client.get(f"{url}/health").status_code == 200:
                            break
                    if time.monotonic() > deadline:
                        raise TimeoutError("llama-server not ready after 120 s")
                    time.sleep(0.25)
            yield Served(url, "bench", proc.pid, dict(LLAMA_BODY))
        finally:
            stop_process(proc)


def start(case: Case, threads: int):  # type: ignore[no-untyped-def]
    if case.server == "llama-server":
        return llama_server(case, case.threads or threads, 32)
    return ours(case)


# ----------------------------------------------------------------------------------- client


def prompt_of(i: int) -> str:
    """Request i's prompt: one of six (so prompt caches have something to reuse), or with
    --distinct-prompts that prompt after the request's number (nothing shared but BOS)."""
    prompt = PROMPTS[i % len(PROMPTS)]
    return f"{i} {prompt}" if DISTINCT[0] else prompt


def payload(target: Served, i: int, max_tokens: int) -> dict:
    """Request i: a varied prompt, greedy, fixed length (it may end at EOS), streamed."""
    return {
        "model": target.model_name,
        "prompt": prompt_of(i),
        "max_tokens": output_length(i, max_tokens),
        "temperature": 0.0,
        "stream": True,
        "stream_options": {"include_usage": True},
        **target.extra_body,
    }


async def run_level(
    target: Served, n: int, requests: int, max_tokens: int, timeout: float
) -> tuple[dict, list[StreamStats]]:
    """N closed-loop workers on a pool of N connections, `requests` completions each."""
    limits = httpx.Limits(max_connections=n + 8, max_keepalive_connections=n + 8)
    url = f"{target.url}/v1/completions"
    async with httpx.AsyncClient(timeout=timeout, limits=limits) as client:

        async def worker(w: int) -> list[StreamStats]:
            await client.get(f"{target.url}/v1/models")  # connect before the clock starts
            out = []
            for r in range(requests):
                body = payload(target, w * requests + r, max_tokens)
                out.append(await guarded(openai_sse(client, url, body, False), timeout))
            return out

        cpu = CpuMeter(target.pid)
        begin = time.perf_counter()
        results = [s for ws in await asyncio.gather(*(worker(w) for w in range(n))) for s in ws]
        wall = time.perf_counter() - begin
        used = cpu.used()
    row = summarize("openai", n, results, wall)
    tokens = max(row["tokens"], 1)
    row["cpu_server_us"] = round((used["server"] + used["engine"]) / tokens * 1e6)
    row["cpu_client_us"] = round(used["client"] / tokens * 1e6)
    row["tokens_per_request"] = round(row["tokens"] / max(row["requests"], 1), 1)
    return row, results


async def warm_up(target: Served, timeout: float) -> None:
    """A few untimed streams (first-use costs: threads, allocations, caches)."""
    await run_level(target, 4, 1, 16, timeout)


async def run_case(case: Case, args, threads: int) -> list[tuple[dict, list[StreamStats]]]:  # type: ignore[no-untyped-def]
    with start(case, threads) as target:
        await warm_up(target, args.timeout)
        out = []
        for n in args.levels:
            requests = args.requests_1 if n == 1 else args.requests
            out.append(await run_level(target, n, requests, args.max_tokens, args.timeout))
        return out


# ---------------------------------------------------------------------------------- results


def key(row: dict) -> tuple:
    return (row["model"], row["weights"], row["server"], row["threads"], row["streams"])


def medians(rows: list[dict]) -> list[dict]:
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(key(row), []).append(row)
    out = []
    for group in groups.values():
        merged = dict(group[0])
        for k, v in group[0].items():
            if k in ("errors", "hung", "requests", "tokens", "same_text"):
                merged[k] = sum(r[k] for r in group)
            elif isinstance(v, int | float) and k not in ("streams", "repeat", "threads"):
                merged[k] = round(median([r[k] for r in group]), 1)
        merged["repeats"] = len(group)
        merged.pop("repeat", None)
        out.append(merged)
    return out


COLUMNS = [
    "model",
    "weights",
    "server",
    "threads",
    "streams",
    "tokens_per_s",
    "ttft_p50_ms",
    "ttft_p99_ms",
    "itl_p50_ms",
    "itl_p99_ms",
    "tokens_per_request",
    "same_text",
    "requests",
    "errors",
    "hung",
    "cpu_server_us",
    "cpu_client_us",
]


def markdown(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(str(r.get(c, "")) for c in COLUMNS) + " |" for r in rows]
    return "\n".join(lines)


def paired(rows: list[dict], num: tuple, den: tuple, field_: str) -> list[float]:
    """Per-repeat ratios num/den of `field_` (keys without streams: (model, weights, server,
    threads)), for each streams level."""
    by = {(*key(r), r["repeat"]): r[field_] for r in rows}
    out = []
    for (m, w, s, t, n, rep), value in by.items():
        if (m, w, s, t) == num and (*den, n, rep) in by and by[(*den, n, rep)]:
            out.append((n, value / by[(*den, n, rep)]))
    return out


def ratio_lines(
    rows: list[dict],
    default_threads: int,
    servers: Sequence[str] = ("ours-llama", "ours-numpy"),
    against: str = "llama-server",
) -> list[str]:
    """The issue's targets: per-repeat ratios of `servers` to `against` and their median,
    per model, weights, streams."""
    lines = []
    combos = sorted({(r["model"], r["weights"]) for r in rows})
    for model, weights in combos:
        den_threads = default_threads if against == "llama-server" else "default"
        den = (model, weights, against, den_threads)
        for server in servers:
            num = (model, weights, server, "default")
            for field_ in ("tokens_per_s", "ttft_p50_ms"):
                per = paired(rows, num, den, field_)
                for n in sorted({n for n, _ in per}):
                    values = [v for m, v in per if m == n]
                    lines.append(
                        f"{model} {weights}: {server} / {against} {field_} at {n} streams: "
                        f"median {median(values):.2f}x (repeats: "
                        + ", ".join(f"{v:.2f}" for v in values)
                        + ")"
                    )
    return lines


def thread_lines(rows: list[dict]) -> list[str]:
    lines = []
    table = medians(rows)
    for r in table:
        if r["server"] == "ours-llama" and r["weights"] == "q8_0":
            lines.append(
                f"{r['model']} {r['weights']} ours-llama threads={r['threads']} {r['streams']} "
                f"streams: {r['tokens_per_s']} tokens/s, TTFT p50 {r['ttft_p50_ms']} ms"
            )
    return lines


async def main_async(args) -> list[dict]:  # type: ignore[no-untyped-def]
    threads = args.llama_threads or default_threads()
    groups = cases(args.models, args.threads)
    if args.servers:
        groups = {m: [c for c in g if c.server in args.servers] for m, g in groups.items()}
    if args.weights:
        groups = {m: [c for c in g if c.weights in args.weights] for m, g in groups.items()}
    rows: list[dict] = []
    reference: dict[tuple, str] = {}  # (model, request index) -> text of the first server
    for repeat in range(args.repeats):
        for group in groups.values():
            k = repeat % len(group)
            for case in group[k:] + group[:k]:  # rotate the order every repeat
                t0 = time.perf_counter()
                try:
                    results = await run_case(case, args, threads)
                except Exception as err:  # noqa: BLE001 - report and go on with the others
                    print(f"FAILED {case.label}: {type(err).__name__}: {err}", flush=True)
                    continue
                for row, stats in results:
                    same = 0
                    for i, s in enumerate(stats):
                        ref_key = (case.model, case.weights, row["streams"], i)
                        ref = reference.setdefault(ref_key, s.text)
                        same += s.text == ref
                    row = {
                        "model": case.model,
                        "weights": case.weights,
                        "server": case.server,
                        "threads": "default" if case.threads is None else case.threads,
                        **row,
                        "same_text": same,
                        "repeat": repeat,
                    }
                    if case.server == "llama-server":
                        row["threads"] = case.threads or threads
                    rows.append(row)
                    print(json.dumps(row), flush=True)
                print(f"# {case.label}: {time.perf_counter() - t0:.0f} s", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["shakespeare", "88m"])
    parser.add_argument(
        "--servers", nargs="+", choices=["ours-llama", "llama-server", "ours-numpy"]
    )
    parser.add_argument("--weights", nargs="+", choices=["f16", "f32", "q8_0"])
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--requests", type=int, default=2, help="per worker at N > 1 streams")
    parser.add_argument("--requests-1", type=int, default=4, help="requests at 1 stream")
    parser.add_argument("--max-tokens", type=int, default=64, help="mean output length")
    parser.add_argument(
        "--threads",
        type=int,
        nargs="*",
        default=[1, 2],
        help="explicit ours-llama thread counts measured on Q8_0 (beside the default)",
    )
    parser.add_argument(
        "--llama-server-args",
        default="-kvu",
        help="extra llama-server arguments (default -kvu: one KV buffer for all slots, as ours)",
    )
    parser.add_argument(
        "--llama-server", type=Path, default=LLAMA_SERVER, help="the llama-server binary"
    )
    parser.add_argument(
        "--llama-threads", type=int, help="llama-server's -t (default: the same as ours)"
    )
    parser.add_argument(
        "--no-cache-prompt",
        action="store_true",
        help="send cache_prompt: false to llama-server (no reuse of a slot's cached prompt)",
    )
    parser.add_argument(
        "--distinct-prompts",
        action="store_true",
        help="each request's prompt starts with its number: no prefix for any cache to reuse",
    )
    parser.add_argument(
        "--name", default="bench_llama_served", help="results file: benchmarks/results/NAME.json"
    )
    parser.add_argument(
        "--ours-extra",
        nargs="*",
        default=[],
        metavar="KEY=JSON",
        help="more parameters.extra for ours-llama, e.g. kv_unified=true",
    )
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    globals()["LLAMA_SERVER"] = args.llama_server
    LLAMA_SERVER_ARGS.extend(args.llama_server_args.split())
    OURS_EXTRA.update(key_json(item) for item in args.ours_extra)
    if args.no_cache_prompt:
        LLAMA_BODY["cache_prompt"] = False
    DISTINCT[0] = args.distinct_prompts
    gc.freeze()
    begin = time.perf_counter()
    rows = uvloop.run(main_async(args))
    table = medians(rows)
    print(markdown(table))
    threads = args.llama_threads or default_threads()
    print("\n".join(ratio_lines(rows, threads)))
    print("\n".join(thread_lines(rows)))
    print(f"# total {time.perf_counter() - begin:.0f} s; llama threads default = {threads}")
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    result = {"args": settings, "default_threads": threads, "rows": rows, "medians": table}
    print("wrote", write_results(args.name, result))


if __name__ == "__main__":
    main()
