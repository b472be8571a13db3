"""Next-token choice, TGI style: a chooser built from only the processors a request needs.

Each request owns one PCG64 generator seeded from its params and draws exactly one uniform per
sampled token (inverse-CDF over the kept tokens in ascending id order), so its tokens depend only
on its seed and its own logits, never on other requests or on batch composition. Greedy decoding
draws nothing. Scores stay float32; only the cumulative sums are float64, for a stable CDF.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from .params import GenerationParams

FloatArray = np.ndarray
IdArray = np.ndarray
Warper = Callable[[IdArray, FloatArray], tuple[IdArray, FloatArray]]
"""Maps candidate (ids ascending, scores) to a new candidate set; ids stay ascending."""


@dataclass(frozen=True)
class Choice:
    """The chosen token, its logprob and, when asked for, the most likely tokens' logprobs.

    Logprobs are the log-softmax of the model's raw logits: before repetition penalty,
    temperature and filters, so they describe the model rather than the sampler.
    """

    token_id: int
    logprob: float
    top_logprobs: tuple[tuple[int, float], ...] = ()
    """(token_id, logprob) of the n most likely tokens, most likely first (may include token_id)."""


def top_k_ids(scores: FloatArray, k: int) -> IdArray:
    """Positions of the k highest scores, ascending; ties at the cut go to the lower position."""
    n = scores.shape[0]
    if k >= n:
        return np.arange(n)
    kth = np.partition(scores, n - k)[n - k]  # linear-time selection, no full sort
    above = np.flatnonzero(scores > kth)
    tied = np.flatnonzero(scores == kth)[: k - above.size]
    return np.sort(np.concatenate((above, tied)))


def nucleus_ids(scores: FloatArray, p: float) -> IdArray:
    """Positions of the smallest set whose probability reaches p, ascending; ties: lower first.

    Sorts only the top m candidates, growing m until they hold mass p: any position outside
    the top m is less likely than all inside, so their order is the full order's prefix.
    """
    weights = np.exp(scores - scores.max())
    target = p * float(weights.sum(dtype=np.float64))
    n = weights.shape[0]
    m = min(n, 64)
    while True:
        candidates = top_k_ids(weights, m)
        order = candidates[np.argsort(-weights[candidates], kind="stable")]
        cdf = np.cumsum(weights[order], dtype=np.float64)
        if cdf[-1] >= target or m >= n:
            cut = min(int(np.searchsorted(cdf, target)), order.size - 1)
            return np.sort(order[: cut + 1])
        m = min(n, m * 4)


def sample_index(scores: FloatArray, rng: np.random.Generator) -> int:
    """Inverse-CDF sample of softmax(scores) with exactly one uniform draw."""
    weights = np.exp(scores - scores.max())
    cdf = np.cumsum(weights, dtype=np.float64)
    index = int(np.searchsorted(cdf, rng.random() * cdf[-1], side="right"))
    return min(index, cdf.shape[0] - 1)


class RepetitionPenalty:
    """CTRL/HF penalty on seen tokens: positive logits divided by it, negative ones multiplied."""

    def __init__(self, penalty: float) -> None:
        self.penalty = np.float32(penalty)

    def __call__(self, scores: FloatArray, history: Sequence[int] | IdArray) -> FloatArray:
        """A penalised copy of scores; history is the prompt plus the tokens generated so far."""
        seen = np.asarray(history, dtype=np.intp)
        if seen.size == 0:
            return scores
        out = scores.copy()
        picked = out[seen]
        out[seen] = np.where(picked > 0, picked / self.penalty, picked * self.penalty)
        return out


class Temperature:
    """Divides scores by the temperature (> 0): below 1 sharpens, above 1 flattens."""

    def __init__(self, temperature: float) -> None:
        self.temperature = np.float32(temperature)  # a float64 scalar would promote the array

    def __call__(self, ids: IdArray, scores: FloatArray) -> tuple[IdArray, FloatArray]:
        """Same candidates, tempered scores."""
        return ids, scores / self.temperature


class CandidateFilter:
    """A warper that keeps a subset of the candidates; subclasses say which positions."""

    def keep(self, scores: FloatArray) -> IdArray:
        """Positions of scores to keep, ascending."""
        raise NotImplementedError

    def __call__(self, ids: IdArray, scores: FloatArray) -> tuple[IdArray, FloatArray]:
        """The kept candidates, still in ascending id order."""
        kept = self.keep(scores)
        return ids[kept], scores[kept]


class TopK(CandidateFilter):
    """Keeps the k highest-scoring candidates (ties at the cut: lower token id)."""

    def __init__(self, k: int) -> None:
        self.k = k

    def keep(self, scores: FloatArray) -> IdArray:
        """The k best positions."""
        return top_k_ids(scores, self.k)


class TopP(CandidateFilter):
    """Keeps the smallest candidate set whose probability reaches p (ties: lower token id)."""

    def __init__(self, p: float) -> None:
        self.p = p

    def keep(self, scores: FloatArray) -> IdArray:
        """The nucleus positions."""
        return nucleus_ids(scores, self.p)


class TokenChooser:
    """Chooses one request's next token: penalty, then argmax or warpers and one seeded draw."""

    def __init__(
        self,
        penalty: RepetitionPenalty | None = None,
        warpers: Sequence[Warper] = (),
        rng: np.random.Generator | None = None,
        logprobs: int | None = None,
    ) -> None:
        self.penalty = penalty
        self.warpers = tuple(warpers)
        self.rng = rng  # None: greedy
        self.logprobs = logprobs

    @classmethod
    def from_params(cls, params: GenerationParams) -> TokenChooser:
        """A chooser holding only the processors these params switch on.

        Top-k runs before temperature (HF runs it after): dividing by a positive temperature
        keeps the order of scores, so the kept set and every kept score are the same, and
        the division then touches k scores instead of the whole vocabulary.
        """
        penalty = None
        if params.repetition_penalty != 1:
            penalty = RepetitionPenalty(params.repetition_penalty)
        if params.greedy:
            return cls(penalty=penalty, logprobs=params.logprobs)
        warpers: list[Warper] = []
        if params.top_k > 0:
            warpers.append(TopK(params.top_k))
        if params.temperature != 1:
            warpers.append(Temperature(params.temperature))
        if params.top_p < 1:
            warpers.append(TopP(params.top_p))
        rng = np.random.Generator(np.random.PCG64(params.seed))
        return cls(penalty, warpers, rng, params.logprobs)

    def __call__(self, logits: FloatArray, history: Sequence[int] | IdArray = ()) -> Choice:
        """The next token for logits of shape (V,); history is prompt + generated ids."""
        logits = np.asarray(logits, dtype=np.float32)
        scores = logits if self.penalty is None else self.penalty(logits, history)
        if self.rng is None:
            token = int(scores.argmax())  # first maximum: ties go to the lower id
        else:
            ids = np.arange(scores.shape[0])
            for warp in self.warpers:
                ids, scores = warp(ids, scores)
            token = int(ids[sample_index(scores, self.rng)])
        return choice_with_logprobs(logits, token, self.logprobs)


def choice_with_logprobs(logits: FloatArray, token: int, n: int | None) -> Choice:
    """A Choice for token with log-softmax(logits) values; the top n only when n is set.

    Without logprobs (n is None) nobody reads them: the logprob is NaN and costs nothing.
    """
    if n is None:
        return Choice(token, math.nan)
    shifted = logits - logits.max()
    log_total = np.float32(np.log(np.exp(shifted).sum(dtype=np.float64)))
    logprob = float(shifted[token] - log_total)
    if not n:
        return Choice(token, logprob)
    top = top_k_ids(logits, n)
    top = top[np.argsort(-logits[top], kind="stable")]
    values = shifted[top] - log_total
    return Choice(token, logprob, tuple(zip(top.tolist(), values.tolist(), strict=True)))
