"""LlamaCppEngine under our scheduler: seeded texts alone and in a crowd (the determinism
contract, as far as llama.cpp's batched arithmetic allows), and the prefix cache's greedy
ids through waves of requests."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip(
    "llama_cpp", reason="llama-cpp-python is not installed (pip install '.[llama]')"
)

from mlserver_streaming.engine import GPT2Engine  # noqa: E402
from mlserver_streaming.engine.llama_cpp import LlamaCppEngine  # noqa: E402
from tests.engine.test_llama_cpp import F16, NUMPY_MODEL, PROMPT, Q8_0, needs_gguf, prompt_ids  # noqa: E402


def seeded_texts(
    engine: LlamaCppEngine | GPT2Engine, seeds: list[int], crowd: int, max_tokens: int = 24
) -> dict[int, list[int]]:
    """Token ids of each seeded request (sampled as served: top-k, top-p, penalty) run
    through our scheduler, with `crowd` other seeded requests decoding beside it (either
    engine: both read the shakespeare vocabulary)."""
    from mlserver_streaming.text.core.scheduler import Scheduler, SequenceRequest
    from mlserver_streaming.text.sample.generation import Generation
    from mlserver_streaming.text.sample.params import GenerationParams
    from mlserver_streaming.text.tokenizer import HFTokenizer

    tokenizer = HFTokenizer.from_file(NUMPY_MODEL / "tokenizer.json")
    scheduler = Scheduler(engine, max_running=32, prefill_chunk_tokens=512)
    ids = [0, *tokenizer.encode(PROMPT)]  # bos, as served
    tokens: dict[int, list[int]] = {}
    sampling = {"temperature": 0.8, "top_k": 40, "top_p": 0.95, "repetition_penalty": 1.1}
    others = [1000 + i for i in range(crowd)]
    for rid, seed in enumerate([*others[: crowd // 2], *seeds, *others[crowd // 2 :]]):
        params = GenerationParams(max_tokens=max_tokens, seed=seed, **sampling)
        generation = Generation(ids[: 3 + seed % 7], params, tokenizer)
        scheduler.submit(SequenceRequest(rid, generation, deadline=1e12, arrival=0.0))
        tokens[seed] = []
    while scheduler.running or scheduler.waiting:
        for rid, delta in scheduler.step().deltas.items():
            tokens[list(tokens)[rid]] += delta.token_ids
    return {seed: tokens[seed] for seed in seeds}


@needs_gguf
@pytest.mark.parametrize("path", [F16, Q8_0], ids=["f16", "q8_0"])
def test_a_seeded_text_alone_and_beside_31_others(path: Path) -> None:
    """Our determinism contract holds on llama.cpp only as far as its arithmetic allows: its
    batched kernels round differently with the batch, so a seeded text sometimes differs
    (benchmarks/llama_determinism.py, 64 seeds: f16 2, Q8_0 22; numpy 0). Bound it here."""
    engine = LlamaCppEngine.from_gguf(path, max_slots=32, threads=1)
    seeds = list(range(8))
    alone = {s: seeded_texts(engine, [s], crowd=0)[s] for s in seeds}
    crowded = seeded_texts(engine, seeds, crowd=24)
    differ = [s for s in seeds if crowded[s] != alone[s]]
    assert all(len(t) == 24 for t in alone.values())
    # Measured on these seeds (the batch is the same every run): f16 [2], Q8_0 [4, 6].
    assert len(differ) <= (1 if path == F16 else 2), differ


@needs_gguf
def test_served_greedy_text_is_the_same_with_and_without_the_prefix_cache() -> None:
    """Four waves of four requests through our scheduler, prompts repeating and growing (a
    chat's turns): the cache skips most prompt tokens and changes no greedy id."""
    from mlserver_streaming.text.core.scheduler import Scheduler, SequenceRequest
    from mlserver_streaming.text.sample.generation import Generation
    from mlserver_streaming.text.sample.params import GenerationParams

    runs = []
    for cache in (False, True):
        engine = LlamaCppEngine.from_gguf(F16, max_slots=4, threads=1, prefix_cache=cache)
        scheduler = Scheduler(engine, max_running=4, prefill_chunk_tokens=64)
        texts: dict[int, list[int]] = {}
        prefilled = 0
        for wave in range(4):
            for i, name in enumerate(("ROMEO", "JULIET", "KING LEAR", "HAMLET")):
                ids = prompt_ids(engine, f"{name}:\n" + "O, speak again! " * wave)
                params = GenerationParams(max_tokens=12, temperature=0.0)
                generation = Generation(ids, params, engine.tokenizer)
                scheduler.submit(SequenceRequest(wave * 4 + i, generation, deadline=1e12))
                texts[wave * 4 + i] = []
            while scheduler.running or scheduler.waiting:
                out = scheduler.step()
                prefilled += out.prompt_tokens
                for rid, delta in out.deltas.items():
                    texts[rid] += delta.token_ids
        runs.append((texts, prefilled))
        engine.close()
    (plain, plain_prefilled), (cached, cached_prefilled) = runs
    assert cached == plain and all(len(t) == 12 for t in plain.values())
    assert cached_prefilled < plain_prefilled / 2, (cached_prefilled, plain_prefilled)
