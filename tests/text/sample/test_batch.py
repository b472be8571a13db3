"""choose_batch picks, row by row, exactly what each request's own TokenChooser picks.

Every test runs twin choosers built from the same params (so the same seed): one goes
through the batch sampler, the other is called alone on the same logits and history. Their
tokens, logprobs and generator states must stay identical step after step, whatever sits in
the other rows of the batch.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from mlserver_streaming.text.sample.batch import choose_batch, top_k_mask
from mlserver_streaming.text.sample.params import GenerationParams
from mlserver_streaming.text.sample.sampling import Choice, TokenChooser, TopP, top_k_ids

TEMPERATURES = (0.0, 1.0, 0.7, 1.6)
TOP_KS = (0, 1, 3, 40, 256, 4096)  # 0 and 4096: too wide to batch, row by row
TOP_PS = (1.0, 0.05, 0.5, 0.95)
PENALTIES = (1.0, 1.3)
COMBOS = list(itertools.product(TEMPERATURES, TOP_KS, TOP_PS, PENALTIES))


def make_logits(rng: np.random.Generator, b: int, vocab: int) -> np.ndarray:
    """Rows of several shapes: peaked, flat, coarse (many exact ties) and all equal."""
    kind = rng.integers(4)
    logits = rng.normal(size=(b, vocab)) * rng.choice([0.3, 1.0, 4.0])
    if kind == 1:  # coarse values: ties at every cut
        logits = np.round(logits * 2) / 2
    elif kind == 2:  # a few equal winners
        logits[:, rng.integers(vocab, size=3)] = logits.max() + 1
    elif kind == 3:
        logits[rng.integers(b)] = 0.0
    return logits.astype(np.float32)


class Twin:
    """One request's two choosers (batched and alone) and its history."""

    def __init__(self, params: GenerationParams, prompt: np.ndarray) -> None:
        self.params = params
        self.batched = TokenChooser.from_params(params)
        self.alone = TokenChooser.from_params(params)
        self.history = prompt.astype(np.int64)

    def states(self) -> tuple[object, object]:
        rngs = (self.batched.rng, self.alone.rng)
        return tuple(None if r is None else r.bit_generator.state for r in rngs)  # type: ignore[return-value]


def same_choice(a: Choice, b: Choice) -> bool:
    logprob_equal = a.logprob == b.logprob or (math.isnan(a.logprob) and math.isnan(b.logprob))
    return a.token_id == b.token_id and logprob_equal and a.top_logprobs == b.top_logprobs


def run_twins(twins: list[Twin], steps: int, vocab: int, seed: int) -> int:
    """Step the twins together; assert equal choices and generator states; count the
    choices that drew from a generator (its state moved), i.e. that really sampled."""
    rng = np.random.default_rng(seed)
    draws = 0
    for _ in range(steps):
        logits = make_logits(rng, len(twins), vocab)
        before = [twin.states()[0] for twin in twins]
        batched = choose_batch(
            logits, [t.batched for t in twins], [t.history for t in twins], min_rows=1
        )
        for row, twin in enumerate(twins):
            alone = twin.alone(logits[row], twin.history)
            assert same_choice(batched[row], alone), (twin.params, batched[row], alone)
            twin.history = np.append(twin.history, alone.token_id)
            first, second = twin.states()
            assert first == second
            draws += first != before[row]
    return draws


def params_for(combo: tuple[float, int, float, float], seed: int, logprobs=None):
    temperature, top_k, top_p, penalty = combo
    return GenerationParams(
        max_tokens=8,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        repetition_penalty=penalty,
        seed=seed,
        logprobs=logprobs,
    )


@pytest.mark.parametrize("combo", COMBOS, ids=str)
def test_one_row_matches_its_chooser_for_every_parameter_combination(combo) -> None:
    twin = Twin(params_for(combo, seed=11), np.arange(5, 25))
    run_twins([twin], steps=4, vocab=4096, seed=hash(combo) % 2**32)


@pytest.mark.parametrize("seed", range(4))
def test_a_mixed_batch_of_32_matches_each_rows_chooser(seed: int) -> None:
    rng = np.random.default_rng(seed)
    twins = []
    for row in range(32):
        combo = COMBOS[rng.integers(len(COMBOS))]
        logprobs = [None, 0, 3][rng.integers(3)]
        prompt = rng.integers(4096, size=rng.integers(1, 30))
        twins.append(Twin(params_for(combo, seed=1000 * seed + row, logprobs=logprobs), prompt))
    greedy = sum(twin.params.greedy for twin in twins)
    # Every sampling row draws at each step, every greedy row never: the batch sampled.
    assert run_twins(twins, steps=60, vocab=4096, seed=seed) == 60 * (32 - greedy) > 0


def test_a_batch_sharing_one_config_matches_each_rows_chooser() -> None:
    combo = (0.8, 40, 0.95, 1.0)  # the benchmark's settings: one group for the whole batch
    twins = [Twin(params_for(combo, seed=row), np.arange(row + 1)) for row in range(32)]
    run_twins(twins, steps=50, vocab=4096, seed=5)


@pytest.mark.parametrize("top_p", [0.5, 0.99])
def test_a_flat_nucleus_on_a_large_vocabulary(top_p: float) -> None:
    # Low-contrast logits: the nucleus outgrows the 64 candidates nucleus_ids sorts first.
    twins = [Twin(params_for((1.0, 256, top_p, 1.0), seed=row), np.arange(3)) for row in range(6)]
    rng = np.random.default_rng(3)
    for _ in range(5):
        logits = (rng.normal(size=(6, 50257)) * 0.05).astype(np.float32)
        logits[0] = 0.0
        batched = choose_batch(
            logits, [t.batched for t in twins], [t.history for t in twins], min_rows=1
        )
        for row, twin in enumerate(twins):
            assert same_choice(batched[row], twin.alone(logits[row], twin.history))


def test_greedy_rows_draw_nothing_and_sampled_rows_draw_once() -> None:
    greedy = Twin(params_for((0.0, 0, 1.0, 1.3), seed=1), np.arange(3))
    sampled = Twin(params_for((0.9, 5, 0.9, 1.0), seed=2), np.arange(3))
    assert greedy.batched.rng is None
    start = sampled.batched.rng.bit_generator.state  # type: ignore[union-attr]
    logits = make_logits(np.random.default_rng(0), 2, 100)
    choose_batch(
        logits, [greedy.batched, sampled.batched], [greedy.history, sampled.history], min_rows=1
    )
    fresh = np.random.Generator(np.random.PCG64(2))
    fresh.random()
    assert sampled.batched.rng.bit_generator.state == fresh.bit_generator.state  # type: ignore[union-attr]
    assert start != fresh.bit_generator.state


def test_an_unknown_warper_falls_back_to_the_rows_own_chooser() -> None:
    def keep_even(ids: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return ids[::2], scores[::2]

    def pair() -> list[TokenChooser]:
        return [TokenChooser(warpers=[keep_even], rng=np.random.default_rng(s)) for s in (1, 2)]

    batched, alone = pair(), pair()
    logits = make_logits(np.random.default_rng(1), 2, 50)
    choices = choose_batch(logits, batched, [np.arange(0)] * 2)
    assert choices == [chooser(row) for chooser, row in zip(alone, logits, strict=True)]
    assert all(choice.token_id % 2 == 0 for choice in choices)


@pytest.mark.parametrize("k", [1, 2, 7, 63, 64, 99, 100])
def test_top_k_mask_keeps_top_k_ids_with_ties_to_the_lower_column(k: int) -> None:
    rng = np.random.default_rng(k)
    scores = np.round(rng.normal(size=(8, 100)) * 2).astype(np.float32)  # many ties
    mask = top_k_mask(scores, k)
    for row in range(8):
        assert np.flatnonzero(mask[row]).tolist() == top_k_ids(scores[row], k).tolist()


class FixedDraw:
    """A generator stand-in whose every draw is `value`: hits the CDF's edges on purpose."""

    def __init__(self, value: float) -> None:
        self.value = value

    def random(self) -> float:
        return self.value


@pytest.mark.parametrize("draw", [0.0, 1.0, 0.5])
@pytest.mark.parametrize("top_p", [1.0, 0.9])
def test_draws_on_the_cdf_edges_match(draw: float, top_p: float) -> None:
    # Token 0 weighs exactly 0.0 after exp: a draw of 0 must skip it (searchsorted "right"),
    # and a draw of 1 lands past the last step: the last kept token.
    logits = np.asarray([[-200.0, 1.0, 0.5, 2.0, 0.5, -3.0]], dtype=np.float32)
    warpers = [] if top_p == 1 else [TopP(top_p)]
    batched = TokenChooser(warpers=warpers, rng=FixedDraw(draw))  # type: ignore[arg-type]
    alone = TokenChooser(warpers=warpers, rng=FixedDraw(draw))  # type: ignore[arg-type]
    assert choose_batch(logits, [batched], [np.arange(0)], min_rows=1)[0] == alone(logits[0])
