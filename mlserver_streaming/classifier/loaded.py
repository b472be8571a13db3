"""What the global classifier routes see of a classifier, and the ones loaded in this process.

The routes are mixins of the runtime class (MLServer's custom handlers must be its
methods), so they work on `Classifier`, which the runtime class satisfies, and look the
target up in `CLASSIFIERS` by the path's name and version (`registry.py`).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from ..events import ModelIdentity
from ..registry import LoadedModels
from .scoring import Schema, Scores
from .settings import ClassifierSettings


class Classifier(ModelIdentity, Protocol):
    """A loaded classifier, as its routes use it."""

    @property
    def extra(self) -> ClassifierSettings:
        """The model's `parameters.extra`, parsed at load."""
        ...

    @property
    def schema(self) -> Schema:
        """Feature count and class order of the loaded estimator."""
        ...

    async def score(self, rows: np.ndarray) -> Scores:
        """Scores of a batch of rows (through the micro-batcher when it is on)."""
        ...


CLASSIFIERS: LoadedModels[Classifier] = LoadedModels()
"""The process's loaded classifiers (MLServer serves every model in one process here)."""
