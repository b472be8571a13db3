"""Decode speed of the numpy GPT2Engine against transformers ``generate`` on the same checkpoint.

    python benchmarks/bench_engine.py --model model-repo/shakespeare --new-tokens 128 --repeats 5

Table 1: single-stream greedy generation (prefill + N new tokens), engine vs transformers, with
torch limited to the same thread count as numpy's BLAS. Table 2: aggregate decode throughput of
the engine when B sequences of different lengths are decoded together.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import transformers
from threadpoolctl import threadpool_limits
from tokenizers import Tokenizer

from mlserver_streaming.engine import GPT2Engine

RESULTS = Path(__file__).parent / "results" / "engine.json"
DEFAULT_PROMPT = "ROMEO:\nBut soft, what light through yonder window breaks?"


def prompt_ids(model: Path, text: str, vocab_size: int) -> list[int]:
    """Tokenize with the model's tokenizer.json if it has one, else a fixed id pattern."""
    if (model / "tokenizer.json").is_file():
        return Tokenizer.from_file(str(model / "tokenizer.json")).encode(text).ids
    return [(7 * i + 3) % vocab_size for i in range(16)]


def engine_generate(engine: GPT2Engine, prompt: list[int], n_new: int) -> list[int]:
    """Greedy generation with the bare engine: one prefill, then one decode per token."""
    slot = engine.allocate()
    try:
        out = [int(engine.prefill(slot, prompt).argmax())]
        while len(out) < n_new:
            out.append(int(engine.decode([slot], [out[-1]])[0].argmax()))
        return out
    finally:
        engine.release(slot)


def hf_generate(model: transformers.PreTrainedModel, prompt: list[int], n_new: int) -> list[int]:
    """Greedy generation with transformers; the caller disabled eos so it makes n_new tokens."""
    ids = torch.tensor([prompt])
    with torch.inference_mode():
        out = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            do_sample=False,
            max_new_tokens=n_new,
            pad_token_id=0,
        )
    return out[0, len(prompt) :].tolist()


def timed(fn, *args) -> tuple[float, list[int]]:
    """Wall time of one call and its result."""
    start = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - start, result


def single_stream(engine, hf_model, prompt: list[int], n_new: int, repeats: int) -> dict:
    """Alternate engine and transformers runs (so background load hits both alike); medians."""
    engine_generate(engine, prompt, n_new)  # warm-up: page in weights and cache
    hf_generate(hf_model, prompt, n_new)
    eng_times, hf_times, same = [], [], True
    for _ in range(repeats):
        t_eng, eng_ids = timed(engine_generate, engine, prompt, n_new)
        t_hf, hf_ids = timed(hf_generate, hf_model, prompt, n_new)
        eng_times.append(t_eng)
        hf_times.append(t_hf)
        same = same and eng_ids == hf_ids
    eng_tps = n_new / statistics.median(eng_times)
    hf_tps = n_new / statistics.median(hf_times)
    return {
        "engine_tokens_per_s": round(eng_tps, 1),
        "transformers_tokens_per_s": round(hf_tps, 1),
        "speedup": round(eng_tps / hf_tps, 2),
        "engine_seconds": [round(t, 4) for t in eng_times],
        "transformers_seconds": [round(t, 4) for t in hf_times],
        "same_greedy_tokens": same,
    }


def batched(engine: GPT2Engine, prompt: list[int], batch: int, n_new: int, repeats: int) -> dict:
    """Aggregate tokens/s of ``batch`` sequences decoded together, each at its own length."""
    times = []
    for _ in range(repeats + 1):  # the first run is a warm-up
        slots = [engine.allocate() for _ in range(batch)]
        # Prompts of different lengths so every step exercises per-slot positions and masks.
        last = [
            int(engine.prefill(s, prompt[: 1 + i % len(prompt)]).argmax())
            for i, s in enumerate(slots)
        ]
        start = time.perf_counter()
        for _ in range(n_new):
            last = engine.decode(slots, last).argmax(axis=-1).tolist()
        times.append(time.perf_counter() - start)
        for s in slots:
            engine.release(s)
    step = statistics.median(times[1:]) / n_new
    return {
        "batch": batch,
        "tokens_per_s": round(batch / step, 1),
        "ms_per_step": round(step * 1e3, 3),
    }


def markdown(single: dict, batches: list[dict], threads: int) -> str:
    """The two result tables as markdown."""
    lines = [
        f"| generator (greedy, {threads} thread(s)) | tokens/s |",
        "|---|---:|",
        f"| transformers `generate` | {single['transformers_tokens_per_s']:.0f} |",
        f"| numpy GPT2Engine | {single['engine_tokens_per_s']:.0f} |",
        f"| speedup | {single['speedup']:.2f}x |",
        "",
        "| batch | aggregate tokens/s | ms per step |",
        "|---:|---:|---:|",
    ]
    lines += [
        f"| {b['batch']} | {b['tokens_per_s']:.0f} | {b['ms_per_step']:.2f} |" for b in batches
    ]
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    """The command line; defaults measure the served shakespeare model."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("model-repo/shakespeare"))
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--batch-sizes", type=lambda s: [int(b) for b in s.split(",")], default=[1, 8, 32]
    )
    parser.add_argument("--prompt", default=DEFAULT_PROMPT)
    # One thread by default: on a busy machine, multi-threaded BLAS (and torch) spin-wait on
    # tiny matrices and run up to 100x slower, which measures contention, not the code.
    parser.add_argument("--threads", type=int, default=1, help="BLAS and torch threads")
    parser.add_argument("--out", type=Path, default=RESULTS)
    return parser.parse_args()


def environment(threads: int) -> dict:
    """Versions and machine state, since CPU numbers mean little without them."""
    return {
        "threads": threads,
        "load_average_1m": round(os.getloadavg()[0], 2),
        "cpus": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
    }


def main() -> None:
    """Run both benchmarks with equal thread counts, print the tables, write the JSON."""
    args = parse_args()
    torch.set_num_threads(args.threads)
    with threadpool_limits(args.threads, user_api="blas"):
        engine = GPT2Engine.from_pretrained(args.model, max_slots=max(args.batch_sizes))
        prompt = prompt_ids(args.model, args.prompt, engine.config.vocab_size)
        hf_model = transformers.GPT2LMHeadModel.from_pretrained(args.model, dtype=torch.float32)
        # The engine loop never stops early, so neither may generate (min_new_tokens would
        # instead mask eos and change the greedy choices).
        hf_model.generation_config.eos_token_id = None
        single = single_stream(engine, hf_model.eval(), prompt, args.new_tokens, args.repeats)
        batches = [
            batched(engine, prompt, b, args.new_tokens, args.repeats) for b in args.batch_sizes
        ]
    print(markdown(single, batches, args.threads))
    result = {
        "model": str(args.model),
        "config": dataclasses.asdict(engine.config),
        "prompt_tokens": len(prompt),
        "new_tokens": args.new_tokens,
        "repeats": args.repeats,
        "single_stream": single,
        "batched_decode": batches,
        "environment": environment(args.threads),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
