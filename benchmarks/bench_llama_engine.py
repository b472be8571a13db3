#!/usr/bin/env python
"""Bare LlamaCppEngine decode speed: tokens/s at batch 1 and 32, for each thread count.

Each batch size prefills its slots with a short prompt, then times ``--steps`` batched
decode steps (after 3 warm-up steps). Each thread count runs in its own process (llama.cpp's
OpenMP pool is per process: contexts with different thread counts in one process slow each
other down several-fold); runs are interleaved over thread counts and repeated, and the
median is printed.

    .venv/bin/python benchmarks/bench_llama_engine.py \\
        --gguf model-repo/shakespeare-gguf/shakespeare-f16.gguf --threads 1 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from mlserver_streaming.engine.llama_cpp import LlamaCppEngine


def decode_rate(engine: LlamaCppEngine, batch: int, steps: int) -> float:
    """Decode tokens per second of ``batch`` slots for ``steps`` steps."""
    slots = [engine.allocate() for _ in range(batch)]
    try:
        prompt = [engine.bos_token_id, *engine.tokenizer.encode("ROMEO:\n")]
        engine.prefill_many(slots, [prompt] * batch)
        tokens = [1] * batch
        for _ in range(3):
            engine.decode(slots, tokens)
        start = time.perf_counter()
        for _ in range(steps):
            tokens = engine.decode(slots, tokens).argmax(axis=1).tolist()
        return batch * steps / (time.perf_counter() - start)
    finally:
        for slot in slots:
            engine.release(slot)


def measure(gguf: Path, threads: int, batches: list[int], steps: int) -> list[float]:
    """Rates for each batch size, in this process."""
    engine = LlamaCppEngine.from_gguf(gguf, max_slots=max(batches), threads=threads)
    return [decode_rate(engine, batch, steps) for batch in batches]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gguf", type=Path, required=True)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--steps", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.gguf, args.threads[0], args.batches, args.steps)))
        return
    rates: dict[int, list[list[float]]] = {n: [] for n in args.threads}
    for _ in range(args.repeats):
        for n in args.threads:
            cmd = [sys.executable, __file__, "--child", "--gguf", str(args.gguf)]
            cmd += ["--threads", str(n), "--steps", str(args.steps), "--batches"]
            cmd += [str(b) for b in args.batches]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            rates[n].append(json.loads(out))
    print(f"{args.gguf.name}: decode tokens/s, median of {args.repeats}")
    print("| threads | " + " | ".join(f"batch {b}" for b in args.batches) + " |")
    print("|---|" + "---|" * len(args.batches))
    for n in args.threads:
        cells = [
            f"{statistics.median(r[i] for r in rates[n]):.0f}" for i in range(len(args.batches))
        ]
        print(f"| {n} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
