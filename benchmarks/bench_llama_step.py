#!/usr/bin/env python
"""One llama.cpp decode step, bare: the Python around ``llama_decode``, and the KV layouts.

Two measurements on a GGUF (default: shakespeare-gguf f16), one thread, in this process:

- **call cost**: ``llama_decode`` of one token through our ``NumpyBatch`` (bare), then
  ``LlamaCppEngine.decode`` (what the scheduler calls) and ``LlamaCppEngine.forward`` with
  one token (the general prefill path decode went through before), alternating in blocks so
  the VM's drift hits each alike;
- **KV layouts**: a decode step of several slots with one KV buffer for all sequences
  (``kv_unified: true``) and one per sequence (``false``), for slot sets that favour each
  (all consecutive, one beside other slots' cached cells, gaps between running slots);
- **pass cost**: steps of 1..32 consecutive slots (split), a pass's fixed cost and a row's
  (what ``seq_runs.rows_per_pass`` times at load), and a gapped step padded or not.

    .venv/bin/python benchmarks/bench_llama_step.py
    .venv/bin/python benchmarks/bench_llama_step.py \
        --gguf model-repo/shakespeare-gguf/q8_0/shakespeare-q8_0.gguf
    .venv/bin/python benchmarks/bench_llama_step.py --blocks 12 \
        --gguf benchmarks/.cache/gguf-88m/gpt2-88m-q8_0.gguf
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import MODEL_REPO, table, write_results  # noqa: E402

from mlserver_streaming.engine.llama_cpp import LlamaCppEngine  # noqa: E402

F16 = MODEL_REPO / "shakespeare-gguf" / "f16" / "shakespeare-f16.gguf"
SLOTS = 32


def alternate(cases: dict[str, Callable[[], None]], blocks: int, per_block: int) -> dict:
    """Median µs per call of each case, run in alternating blocks."""
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(blocks):
        for name, call in cases.items():
            begin = time.perf_counter()
            for _ in range(per_block):
                call()
            times[name].append((time.perf_counter() - begin) / per_block * 1e6)
    return {name: round(statistics.median(t), 1) for name, t in times.items()}


def cut(engine: LlamaCppEngine, slots: list[int], length: int) -> None:
    """Drop the slots' cells from ``length`` on (-1: all), so a case repeats at one context."""
    for slot in slots:
        engine._lib.llama_memory_seq_rm(engine._memory, slot, length, -1)
        engine._lengths[slot] = max(length, 0)


def call_cost(path: Path, blocks: int) -> dict:
    engine = LlamaCppEngine.from_gguf(path, max_slots=SLOTS, threads=1)
    slot = engine.allocate()
    engine.prefill_many([slot], [[0, 5, 6, 7]])
    lib, ctx = engine._lib, engine._ctx
    token, wants = np.array([5], np.int32), np.array([1], np.int8)
    seq = np.array([slot], np.int32)

    def rewind() -> None:  # stay inside the context
        if engine._lengths[slot] > engine.context_length - 8:
            cut(engine, [slot], 4)

    def bare() -> None:
        pos = np.array([engine._lengths[slot]], np.int32)
        lib.llama_decode(ctx, engine._batch.fill(token, pos, seq, wants))
        engine._lengths[slot] += 1
        rewind()

    def decode() -> None:
        engine.decode([slot], [5])
        rewind()

    def forward() -> None:
        engine.forward([slot], [[5]])
        rewind()

    result = alternate({"bare": bare, "decode": decode, "forward": forward}, blocks, 50)
    engine.close()
    return result


def layouts(path: Path, blocks: int) -> list[dict]:
    engines = {
        unified: LlamaCppEngine.from_gguf(path, max_slots=SLOTS, threads=1, unified_kv=unified)
        for unified in (True, False)
    }
    rng = np.random.default_rng(0)
    cases = {
        "32 consecutive": (list(range(SLOTS)), []),
        "16 with gaps, 16 cached": (list(range(0, SLOTS, 2)), list(range(1, SLOTS, 2))),
        "1, 31 cached": ([5], [s for s in range(SLOTS) if s != 5]),
        "1, nothing cached": ([5], []),
    }
    rows = []
    for name, (running, cached) in cases.items():
        row: dict = {"slots decoding": name}
        for unified, engine in engines.items():
            for slot in range(SLOTS):  # empty every slot
                if engine.seqs.in_use[slot]:
                    engine.release(slot)
                cut(engine, [slot], -1)
            for slot in cached:  # prefilled, then released: the prefix cache keeps them
                engine._claim(slot, 0)
                engine.prefill_many([slot], [rng.integers(1, 1000, 80).tolist()])
                engine.release(slot)
            for slot in running:
                engine._claim(slot, 0)
                engine.prefill_many([slot], [rng.integers(1, 1000, 60).tolist()])

            def step(engine: LlamaCppEngine = engine, running: list[int] = running) -> None:
                engine.decode(running, [7] * len(running))

            ms = alternate({"step": step}, blocks, 10)["step"] / 1000
            row["unified ms/step" if unified else "split ms/step"] = round(ms, 2)
        row["split / unified"] = round(row["split ms/step"] / row["unified ms/step"], 2)
        rows.append(row)
    for engine in engines.values():
        engine.close()
    return rows


def pass_cost(path: Path, blocks: int) -> dict:
    """ms per step of k consecutive slots (split KV), for k = 1..32: a pass's fixed cost and
    a row's, the numbers behind seq_runs.rows_per_pass."""
    engine = LlamaCppEngine.from_gguf(path, max_slots=SLOTS, threads=1, unified_kv=False)
    rng = np.random.default_rng(0)
    slots = [engine.allocate() for _ in range(SLOTS)]
    engine.prefill_many(slots, [rng.integers(1, 1000, 40).tolist() for _ in slots])
    cases = {}
    for k in (1, 2, 4, 8, 16, 32):

        def step(k: int = k) -> None:
            engine.decode(slots[:k], [7] * k)
            cut(engine, slots[:k], 40)  # every block at the same context

        cases[f"k={k}"] = step
    ms = {name: round(us / 1000, 2) for name, us in alternate(cases, blocks, 5).items()}
    row = (ms["k=32"] - ms["k=1"]) / 31
    ms |= {"row ms": round(row, 2), "pass ms": round(ms["k=1"] - row, 2)}
    ms["rows_per_pass (load-time)"] = engine.max_pad
    engine.close()
    return ms


def padded_gaps(path: Path, blocks: int) -> dict:
    """24 of 32 slots decoding, every fourth idle (8 one-slot gaps): unified, split with
    its gaps padded, split without (one pass per run)."""
    rng = np.random.default_rng(0)
    out = {}
    for name, unified, pad in (
        ("unified", True, 0),
        ("split, padded", False, SLOTS),
        ("split, no pads", False, 0),
    ):
        engine = LlamaCppEngine.from_gguf(path, max_slots=SLOTS, threads=1, unified_kv=unified)
        engine.max_pad = pad
        slots = [engine.allocate() for _ in range(SLOTS)]
        engine.prefill_many(slots, [rng.integers(1, 1000, 12).tolist() for _ in slots])
        for slot in slots[3::4]:
            engine.release(slot)
        running = [s for s in slots if s % 4 != 3]

        def step(engine: LlamaCppEngine = engine, running: list[int] = running) -> None:
            engine.decode(running, [7] * len(running))
            cut(engine, running, 12)

        out[f"{name} ms"] = round(alternate({"s": step}, blocks, 5)["s"] / 1000, 2)
        engine.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gguf", type=Path, default=F16)
    parser.add_argument("--blocks", type=int, default=30, help="alternating blocks per case")
    args = parser.parse_args()
    cost = call_cost(args.gguf, args.blocks)
    print(table(["bare", "decode", "forward"], [cost]), "(µs per one-token call)\n")
    rows = layouts(args.gguf, max(args.blocks // 4, 3))
    cols = ["slots decoding", "unified ms/step", "split ms/step", "split / unified"]
    print(table(cols, rows))
    passes = pass_cost(args.gguf, max(args.blocks // 6, 3))
    print(table(list(passes), [passes]), "(ms per step of k consecutive slots, split KV)\n")
    gaps = padded_gaps(args.gguf, max(args.blocks // 6, 3))
    print(table(list(gaps), [gaps]), "(24 of 32 slots decoding, 8 one-slot gaps)\n")
    name = f"bench_llama_step_{args.gguf.stem}"
    results = {"gguf": str(args.gguf), "call_us": cost, "layouts": rows, "pass_cost_ms": passes}
    print("wrote", write_results(name, results | {"padded_gaps_ms": gaps}))


if __name__ == "__main__":
    main()
