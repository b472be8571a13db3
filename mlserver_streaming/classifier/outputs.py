"""Scores → V2 output tensors (through MLServer's NumpyCodec) and the progress parameters of
a chunked stream's events."""

from __future__ import annotations

import numpy as np
from mlserver.types import ResponseOutput

from ..tensors import encode_array
from .scoring import Schema, Scores

OUTPUT_LABEL = "label"
OUTPUT_PROBABILITIES = "probabilities"
OUTPUT_CONFIDENCE = "confidence"
# Event parameters of a chunked stream (all int, so gRPC carries them).
PARAM_OFFSET = "offset"
PARAM_ROWS_DONE = "rows_done"
PARAM_ROWS_TOTAL = "rows_total"


def available_outputs(schema: Schema) -> tuple[str, ...]:
    """Every output this estimator can produce (probabilities need `predict_proba`)."""
    if schema.has_proba:
        return (OUTPUT_LABEL, OUTPUT_PROBABILITIES, OUTPUT_CONFIDENCE)
    return (OUTPUT_LABEL,)


def wire_labels(labels: np.ndarray) -> np.ndarray:
    """Labels as the estimator has them, but text labels as str (object arrays can't encode)."""
    return labels.astype(str) if labels.dtype.kind in "OSU" else labels


def encode_scores(scores: Scores, names: tuple[str, ...]) -> list[ResponseOutput]:
    """The requested output tensors of some rows' scores, in the requested order."""
    return [encode_array(name, _array(scores, name)) for name in names]


def _array(scores: Scores, name: str) -> np.ndarray:
    if name == OUTPUT_LABEL:
        return wire_labels(scores.labels)
    array = scores.probabilities if name == OUTPUT_PROBABILITIES else scores.confidence
    if array is None:
        raise ValueError(f"output {name!r} needs an estimator with predict_proba")
    return array
