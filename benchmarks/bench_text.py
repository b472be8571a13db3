"""Single-stream decode speed: bare engine, served over REST SSE and gRPC, and transformers.

All four run in one process run on the same checkpoint and prompt, greedy, the same number
of new tokens, alternating so background load hits each alike; medians of --repeats.

    python benchmarks/bench_text.py --new-tokens 128 --repeats 5

Targets: served >= 0.8x the bare engine; engine >= 2.5x transformers `generate`.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

import grpc
import httpx
import mlserver.grpc.dataplane_pb2_grpc as dataplane
import torch
import transformers
from bench_engine import engine_generate, hf_generate
from common import MODEL_REPO, median, served, write_results
from load_text import grpc_stream_one, rest_stream
from tokenizers import Tokenizer

from mlserver_streaming.engine import GPT2Engine

PROMPT = "ROMEO:\nBut soft, what light through yonder window breaks?"


def served_body(n_new: int) -> dict:
    """Greedy, exactly n_new tokens unless the model ends first (eos)."""
    return {
        "inputs": [{"name": "prompt", "shape": [1], "datatype": "BYTES", "data": [PROMPT]}],
        "parameters": {"max_tokens": n_new, "temperature": 0, "seed": 0},
    }


async def served_rates(server, n_new: int, repeats: int) -> dict[str, list[float]]:
    """Tokens/s of one stream at a time, REST SSE then gRPC, `repeats` times each."""
    rates: dict[str, list[float]] = {"rest_sse": [], "grpc": []}
    url = f"{server.http_url}/v2/models/shakespeare/generate_stream"
    async with (
        httpx.AsyncClient(timeout=120) as client,
        grpc.aio.insecure_channel(server.grpc_target) as channel,
    ):
        stub = dataplane.GRPCInferenceServiceStub(channel)
        for i in range(repeats + 1):  # the first round is a warm-up
            for name, run in (
                ("rest_sse", lambda: rest_stream(client, url, served_body(n_new))),
                ("grpc", lambda: grpc_stream_one(stub, served_body(n_new))),
            ):
                start = time.perf_counter()
                stats = await run()
                if i:
                    rates[name].append(stats.tokens / (time.perf_counter() - start))
    return rates


def local_rates(folder: Path, n_new: int, repeats: int) -> dict[str, list[float]]:
    """Tokens/s of the bare engine and of transformers `generate`, alternating."""
    engine = GPT2Engine.from_pretrained(folder, max_slots=1)
    model = transformers.GPT2LMHeadModel.from_pretrained(folder, dtype=torch.float32).eval()
    model.generation_config.eos_token_id = None  # generate exactly n_new tokens
    prompt = Tokenizer.from_file(str(folder / "tokenizer.json")).encode(PROMPT).ids
    rates: dict[str, list[float]] = {"engine": [], "transformers": []}
    for i in range(repeats + 1):
        for name, run in (
            ("engine", lambda: engine_generate(engine, prompt, n_new)),
            ("transformers", lambda: hf_generate(model, prompt, n_new)),
        ):
            start = time.perf_counter()
            tokens = len(run())
            if i:
                rates[name].append(tokens / (time.perf_counter() - start))
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--repo", type=Path, default=MODEL_REPO)
    args = parser.parse_args()

    # One thread for both, as the engine's BLAS: on 2 shared cores torch's 2 threads were
    # slower (274 vs 360 tokens/s), so this is transformers' better setting too.
    torch.set_num_threads(1)
    rates = local_rates(args.repo / "shakespeare", args.new_tokens, args.repeats)
    with served(["shakespeare"], args.repo) as server:
        rates |= asyncio.run(served_rates(server, args.new_tokens, args.repeats))
    medians = {k: round(median(v), 1) for k, v in rates.items()}
    ratios = {
        "rest_sse / engine": round(medians["rest_sse"] / medians["engine"], 2),
        "grpc / engine": round(medians["grpc"] / medians["engine"], 2),
        "engine / transformers": round(medians["engine"] / medians["transformers"], 2),
    }
    print("| path | tokens/s (median) |\n|---|---|")
    for name, value in medians.items():
        print(f"| {name} | {value} |")
    print("\n| ratio | value |\n|---|---|")
    for name, value in ratios.items():
        print(f"| {name} | {value} |")
    out = write_results(
        "text_single_stream",
        {
            "new_tokens": args.new_tokens,
            "repeats": args.repeats,
            "tokens_per_s": rates,
            "median_tokens_per_s": medians,
            "ratios": ratios,
        },
    )
    print("wrote", out)


if __name__ == "__main__":
    main()
