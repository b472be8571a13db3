"""How often a seeded text differs alone vs beside 31 others, on llama.cpp and on numpy.

Our scheduler promises that a seeded request samples the same text whatever runs beside it:
each request has its own seeded generator, and the numpy engine computes each row of a
batch exactly as it would alone. llama.cpp's batched kernels (matmuls over a batch, its
quantized dot products) round differently with the batch, so logits move by ~1e-3 (f16) to
~1e-2 (Q8_0) and a sampled token near a top-p or top-k boundary can flip. This counts it.

    cd benchmarks && ../.venv/bin/python llama_determinism.py --seeds 64
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.test_llama_cpp_engine import F16, NUMPY_MODEL, Q8_0  # noqa: E402
from tests.test_llama_cpp_scheduling import seeded_texts  # noqa: E402

from mlserver_streaming.engine import GPT2Engine  # noqa: E402
from mlserver_streaming.engine.llama_cpp import LlamaCppEngine  # noqa: E402


def first_difference(a: list[int], b: list[int]) -> int | None:
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=64)
    parser.add_argument("--tokens", type=int, default=24)
    args = parser.parse_args()
    engines = {
        "numpy (shakespeare safetensors)": lambda: GPT2Engine.from_pretrained(NUMPY_MODEL, 32),
        "llama.cpp f16": lambda: LlamaCppEngine.from_gguf(F16, max_slots=32, threads=1),
        "llama.cpp Q8_0": lambda: LlamaCppEngine.from_gguf(Q8_0, max_slots=32, threads=1),
    }
    print(
        "| engine | seeded texts differing (alone vs beside 24–31 others) | first differing token |"
    )
    print("|---|---|---|")
    for name, make in engines.items():
        engine = make()
        differ, where = 0, []
        for start in range(0, args.seeds, 8):
            seeds = list(range(start, min(start + 8, args.seeds)))
            crowded = seeded_texts(engine, seeds, crowd=32 - len(seeds), max_tokens=args.tokens)
            for seed in seeds:
                alone = seeded_texts(engine, [seed], crowd=0, max_tokens=args.tokens)[seed]
                at = first_difference(alone, crowded[seed])
                if at is not None:
                    differ += 1
                    where.append(at)
        print(f"| {name} | {differ} of {args.seeds} | {sorted(where) or '-'} |")


if __name__ == "__main__":
    main()
