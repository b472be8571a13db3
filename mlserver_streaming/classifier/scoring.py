"""Running the estimator: rows in, labels and probabilities out (no V2 types here).

Labels come from the highest probability when the estimator has `predict_proba`, so
`label`, `probabilities` and `confidence` always agree and one estimator call serves
all three. (For scikit-learn's classifiers this equals `predict`, except e.g.
`SVC(probability=True)`, whose Platt-scaled probabilities may disagree with `predict`.)
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Self

import numpy as np
from threadpoolctl import threadpool_limits

from ..errors import InvalidSettings


@dataclass(frozen=True)
class Schema:
    """What the fitted estimator expects and answers: feature count, class order."""

    n_features: int
    classes: np.ndarray
    has_proba: bool

    @classmethod
    def of(cls, estimator: Any, source: str) -> Schema:
        """Read the schema off a fitted estimator; `source` names it in errors."""
        missing = [
            a for a in ("predict", "n_features_in_", "classes_") if not hasattr(estimator, a)
        ]
        if missing:
            raise InvalidSettings(
                f"{source}: a fitted scikit-learn classifier is required (with predict, "
                f"n_features_in_ and classes_), got {type(estimator).__name__} without "
                f"{', '.join(missing)}."
            )
        return cls(
            n_features=int(estimator.n_features_in_),
            classes=np.asarray(estimator.classes_),
            has_proba=hasattr(estimator, "predict_proba"),
        )


@dataclass(frozen=True)
class Scores:
    """Per-row results of one estimator call; slicing selects rows."""

    labels: np.ndarray
    """[N] class labels, with the dtype of the estimator's `classes_`."""

    probabilities: np.ndarray | None
    """[N, C] float32 in `classes_` order; None for estimators without `predict_proba`."""

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, rows: slice) -> Self:
        probabilities = None if self.probabilities is None else self.probabilities[rows]
        return type(self)(self.labels[rows], probabilities)

    @property
    def confidence(self) -> np.ndarray | None:
        """[N] float32: the probability of each row's label."""
        return None if self.probabilities is None else self.probabilities.max(axis=1)

    @classmethod
    def concat(cls, parts: Sequence[Scores]) -> Scores:
        """The rows of several results, in order."""
        if len(parts) == 1:
            return parts[0]
        labels = np.concatenate([p.labels for p in parts])
        if parts[0].probabilities is None:
            return cls(labels, None)
        return cls(labels, np.concatenate([p.probabilities for p in parts]))  # type: ignore[misc]


class Scorer:
    """A fitted estimator with its schema; calling it blocks, so run it in a worker thread."""

    def __init__(self, estimator: Any, schema: Schema):
        self.estimator = estimator
        self.schema = schema

    def __call__(self, rows: np.ndarray) -> Scores:
        if not self.schema.has_proba:
            return Scores(np.asarray(self.estimator.predict(rows)), None)
        probabilities = np.asarray(self.estimator.predict_proba(rows), dtype=np.float32)
        labels = self.schema.classes[probabilities.argmax(axis=1)]
        return Scores(labels, probabilities)


class ScoringThread:
    """The one thread that runs a model's estimator calls, off the event loop.

    OpenMP's thread count is a per-thread setting, so limiting it here leaves other
    models alone; without a limit, gradient boosting spins up one thread per core for
    every call and a busy machine makes even one-row calls take tens of milliseconds.
    """

    def __init__(self, scorer: Scorer, openmp_threads: int):
        self._scorer = scorer
        self._executor = ThreadPoolExecutor(
            max_workers=1,
            thread_name_prefix="scoring",
            initializer=threadpool_limits,
            initargs=(openmp_threads, "openmp"),
        )

    async def __call__(self, rows: np.ndarray) -> Scores:
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._scorer, rows)

    def close(self) -> None:
        """Stop the thread once its current call returns; queued calls are dropped."""
        self._executor.shutdown(wait=False, cancel_futures=True)
