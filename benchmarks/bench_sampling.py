"""Sampling time per decode step: per-row TokenChooser calls against one choose_batch call.

    python benchmarks/bench_sampling.py --batch 32 --vocab 4096 --steps 300

Both sides see the same [B, V] logits and histories; the per-row side is what the scheduler
did before batched sampling (one chooser call per sequence), the batched side what it does now.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from mlserver_streaming.text.sample.batch import choose_batch
from mlserver_streaming.text.sample.params import GenerationParams
from mlserver_streaming.text.sample.sampling import TokenChooser

CONFIGS = {
    "load_text (T=0.8, k=40, p=0.95)": {"temperature": 0.8, "top_k": 40, "top_p": 0.95},
    "top-p only (T=0.8, p=0.9)": {"temperature": 0.8, "top_p": 0.9},
    "plain sampling (T=1)": {},
    "greedy": {"temperature": 0.0},
    "all + penalty 1.2": {
        "temperature": 0.8,
        "top_k": 40,
        "top_p": 0.95,
        "repetition_penalty": 1.2,
    },
}


def time_per_step(
    config: dict[str, float], batch: int, vocab: int, steps: int
) -> tuple[float, float]:
    """Median microseconds per step: (per-row choosers, choose_batch)."""
    rng = np.random.default_rng(0)
    logits = [(rng.normal(size=(batch, vocab)) * 3).astype(np.float32) for _ in range(8)]
    histories = [rng.integers(vocab, size=64) for _ in range(batch)]

    def choosers() -> list[TokenChooser]:
        params = [GenerationParams(max_tokens=8, seed=i, **config) for i in range(batch)]  # type: ignore[arg-type]
        return [TokenChooser.from_params(p) for p in params]

    per_row, batched = choosers(), choosers()
    row_times, batch_times = [], []
    for step in range(steps):
        step_logits = logits[step % len(logits)]
        start = time.perf_counter()
        for row, chooser in enumerate(per_row):
            chooser(step_logits[row], histories[row])
        row_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        choose_batch(step_logits, batched, histories)
        batch_times.append(time.perf_counter() - start)
    return statistics.median(row_times) * 1e6, statistics.median(batch_times) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--vocab", type=int, default=4096)
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()
    print("| config | B | per-row µs/step | batched µs/step | speed-up |")
    print("|---|---|---|---|---|")
    for name, config in CONFIGS.items():
        for batch in args.batch:
            row, batched = time_per_step(config, batch, args.vocab, args.steps)
            print(f"| {name} | {batch} | {row:.0f} | {batched:.0f} | {row / batched:.1f}× |")


if __name__ == "__main__":
    main()
