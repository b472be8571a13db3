"""TokenChooser and its processors: exact kept sets, seeded determinism, greedy, logprobs."""

from __future__ import annotations

import numpy as np
import pytest

from mlserver_streaming.text.sample.params import GenerationParams
from mlserver_streaming.text.sample.sampling import (
    RepetitionPenalty,
    Temperature,
    TokenChooser,
    TopK,
    TopP,
    nucleus_ids,
    sample_index,
    top_k_ids,
)


def logits_of(probs: list[float]) -> np.ndarray:
    return np.log(np.asarray(probs, dtype=np.float32))


def random_logits(steps: int, vocab: int = 50, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(size=vocab).astype(np.float32) for _ in range(steps)]


def reference_nucleus(scores: np.ndarray, p: float) -> set[int]:
    """Full-sort reference: order by probability desc, then id asc; cut where mass reaches p."""
    probs = np.exp(scores - scores.max()).astype(np.float64)
    order = np.lexsort((np.arange(scores.size), -probs))
    cut = int(np.searchsorted(np.cumsum(probs[order]), p * probs.sum()))
    return set(order[: cut + 1].tolist())


@pytest.mark.parametrize(
    ("k", "expected"),
    [(1, {1}), (2, {1, 3}), (3, {1, 2, 3}), (4, {0, 1, 2, 3}), (99, {0, 1, 2, 3})],
)
def test_top_k_keeps_exactly_the_k_best(k: int, expected: set[int]) -> None:
    ids, scores = TopK(k)(np.arange(4), logits_of([0.1, 0.4, 0.2, 0.3]))
    assert set(ids.tolist()) == expected
    assert list(ids) == sorted(ids) and scores.dtype == np.float32


def test_top_k_ties_at_the_cut_go_to_the_lower_id() -> None:
    scores = np.asarray([1.0, 3.0, 1.0, 2.0, 1.0], dtype=np.float32)
    assert top_k_ids(scores, 3).tolist() == [0, 1, 3]


@pytest.mark.parametrize(
    ("p", "expected"),
    [(0.3, {1}), (0.4, {1}), (0.65, {1, 3}), (0.75, {1, 2, 3}), (0.95, {0, 1, 2, 3})],
)
def test_top_p_keeps_the_smallest_set_reaching_p(p: float, expected: set[int]) -> None:
    ids, _ = TopP(p)(np.arange(4), logits_of([0.1, 0.4, 0.2, 0.3]))
    assert set(ids.tolist()) == expected


def test_top_p_ties_go_to_the_lower_id() -> None:
    assert nucleus_ids(np.zeros(6, dtype=np.float32), 0.5).tolist() == [0, 1, 2]


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9, 0.99])
def test_top_p_matches_a_full_sort_on_a_large_vocabulary(p: float) -> None:
    # 3000 tokens with a flat distribution: the nucleus outgrows the first 64 candidates.
    scores = random_logits(1, vocab=3000, seed=1)[0] * np.float32(0.3)
    assert set(nucleus_ids(scores, p).tolist()) == reference_nucleus(scores, p)


def test_top_k_then_top_p_on_the_kept_candidates() -> None:
    ids, scores = TopK(3)(np.arange(4), logits_of([0.1, 0.4, 0.2, 0.3]))
    ids, _ = TopP(0.5)(ids, scores)  # renormalised over 0.9: 0.4/0.9 < 0.5 ≤ 0.7/0.9
    assert ids.tolist() == [1, 3]


def test_inverse_cdf_in_ascending_id_order() -> None:
    class FixedDraw:
        def __init__(self, u: float) -> None:
            self.u = u

        def random(self) -> float:
            return self.u

    scores = logits_of([0.25, 0.25, 0.5])
    picks = [sample_index(scores, FixedDraw(u)) for u in (0.0, 0.24, 0.26, 0.49, 0.51, 0.999)]
    assert picks == [0, 0, 1, 1, 2, 2]


def test_processors_keep_float32_and_leave_logits_alone() -> None:
    logits = np.asarray([2.0, -1.0, 0.5], dtype=np.float32)
    penalised = RepetitionPenalty(2.0)(logits, [0, 1, 1])
    assert penalised.tolist() == [1.0, -2.0, 0.5] and penalised.dtype == np.float32
    assert logits.tolist() == [2.0, -1.0, 0.5]
    assert Temperature(0.5)(np.arange(3), logits)[1].dtype == np.float32


def test_from_params_builds_only_what_is_needed() -> None:
    plain = TokenChooser.from_params(GenerationParams(max_tokens=8, seed=1))
    assert plain.penalty is None and plain.warpers == () and plain.rng is not None
    full = TokenChooser.from_params(
        GenerationParams(
            max_tokens=8, temperature=0.7, top_k=5, top_p=0.9, seed=1, repetition_penalty=1.3
        )
    )
    assert isinstance(full.penalty, RepetitionPenalty)
    assert [type(w) for w in full.warpers] == [TopK, Temperature, TopP]


def test_top_k_before_temperature_chooses_exactly_as_hf_order() -> None:
    params = GenerationParams(max_tokens=8, temperature=0.7, top_k=40, top_p=0.9, seed=3)
    ours = TokenChooser.from_params(params)
    hf_order = TokenChooser(
        warpers=[Temperature(0.7), TopK(40), TopP(0.9)],
        rng=np.random.Generator(np.random.PCG64(3)),
    )
    rng = np.random.default_rng(0)
    for _ in range(200):
        logits = (rng.standard_normal(4096) * 3).astype(np.float32)
        assert ours(logits).token_id == hf_order(logits).token_id


def test_greedy_is_argmax_after_penalty_and_draws_nothing() -> None:
    chooser = TokenChooser.from_params(
        GenerationParams(max_tokens=8, temperature=0, repetition_penalty=1.2)
    )
    assert chooser.rng is None
    assert chooser(np.asarray([2.0, 1.9, -1.0], dtype=np.float32), [0]).token_id == 1
    assert chooser(np.asarray([-1.0, -1.1], dtype=np.float32), [0]).token_id == 1
    assert chooser(np.asarray([-1.0, -1.1], dtype=np.float32), []).token_id == 0


def run(chooser: TokenChooser, steps: list[np.ndarray]) -> list[int]:
    history: list[int] = []
    for logits in steps:
        history.append(chooser(logits, history).token_id)
    return history


def test_same_seed_same_tokens_and_one_draw_per_token() -> None:
    params = GenerationParams(max_tokens=8, temperature=0.9, top_k=20, top_p=0.95, seed=123)
    steps = random_logits(12)
    first = TokenChooser.from_params(params)
    assert run(first, steps) == run(TokenChooser.from_params(params), steps)
    reference = np.random.Generator(np.random.PCG64(123))
    reference.random(len(steps))
    assert first.rng is not None and first.rng.random() == reference.random()
    other = TokenChooser.from_params(GenerationParams(max_tokens=8, temperature=0.9, seed=124))
    assert run(other, steps) != run(TokenChooser.from_params(params), steps)


def test_interleaved_requests_do_not_affect_each_other() -> None:
    a_steps, b_steps = random_logits(10, seed=2), random_logits(10, seed=3)
    params_a, params_b = (
        GenerationParams(max_tokens=8, seed=5),
        GenerationParams(max_tokens=8, seed=6),
    )
    alone_a = run(TokenChooser.from_params(params_a), a_steps)
    alone_b = run(TokenChooser.from_params(params_b), b_steps)
    a, b = TokenChooser.from_params(params_a), TokenChooser.from_params(params_b)
    history_a: list[int] = []
    history_b: list[int] = []
    for x, y in zip(a_steps, b_steps, strict=True):
        history_b.append(b(y, history_b).token_id)  # b first: the order in a batch is irrelevant
        history_a.append(a(x, history_a).token_id)
    assert (history_a, history_b) == (alone_a, alone_b)


def test_samples_stay_in_the_kept_set() -> None:
    chooser = TokenChooser.from_params(GenerationParams(max_tokens=8, top_k=2, seed=9))
    logits = logits_of([0.1, 0.4, 0.2, 0.3])
    assert {chooser(logits).token_id for _ in range(100)} == {1, 3}


def test_logprobs_are_log_softmax_of_raw_logits() -> None:
    logits = logits_of([0.1, 0.4, 0.2, 0.3])
    chooser = TokenChooser.from_params(
        GenerationParams(max_tokens=8, temperature=0.3, seed=1, logprobs=2)
    )
    choice = chooser(logits)
    assert choice.logprob == pytest.approx(np.log([0.1, 0.4, 0.2, 0.3])[choice.token_id])
    assert [t for t, _ in choice.top_logprobs] == [1, 3]
    assert [v for _, v in choice.top_logprobs] == pytest.approx(np.log([0.4, 0.3]).tolist())
    assert (
        TokenChooser.from_params(GenerationParams(max_tokens=8, seed=1, logprobs=0))(
            logits
        ).top_logprobs
        == ()
    )
    assert (
        TokenChooser.from_params(GenerationParams(max_tokens=8, seed=1))(logits).top_logprobs == ()
    )
