"""A V2 request → validated rows and options; every refusal names the field and the limit.

Cheap checks (names, datatype, shape, row limit) run before the data is converted, so an
oversized request is refused without copying it. Rows become float64, scikit-learn's
native dtype, so requests of either float width can share one micro-batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from mlserver.types import InferenceRequest, RequestInput

from ..errors import InvalidInput
from ..params import reject_unknown, request_parameters
from .outputs import available_outputs
from .scoring import Schema
from .settings import PARAM_CHUNK_SIZE, ClassifierSettings

INPUT_FEATURES = "features"
FLOAT_DATATYPES = ("FP32", "FP64")


@dataclass(frozen=True)
class ClassifyRequest:
    """What the runtime needs from one request, already checked."""

    rows: np.ndarray
    """[N, F] float64, finite, 1 <= N <= max_rows."""

    chunk_size: int
    """Rows per event (and per scoring step)."""

    outputs: tuple[str, ...]
    """Output tensors to return, in order."""


def parse_request(
    request: InferenceRequest, schema: Schema, settings: ClassifierSettings
) -> ClassifyRequest:
    """Check a request against the model's schema and limits; raise InvalidInput if wrong."""
    params = request_parameters(request)
    reject_unknown(params, allowed=(PARAM_CHUNK_SIZE,))
    chunk_size = settings.request_chunk_size(params.get(PARAM_CHUNK_SIZE))
    tensor = _features_input(request, schema)
    return ClassifyRequest(
        rows=decode_rows(tensor, schema, settings.max_rows),
        chunk_size=chunk_size,
        outputs=requested_outputs(request, schema),
    )


def _features_input(request: InferenceRequest, schema: Schema) -> RequestInput:
    names = [tensor.name for tensor in request.inputs]
    if names != [INPUT_FEATURES]:
        raise InvalidInput(
            f"exactly one input {INPUT_FEATURES!r} is required (FP32 or FP64, shape "
            f"[N, {schema.n_features}]), got inputs {names}."
        )
    return request.inputs[0]


def decode_rows(tensor: RequestInput, schema: Schema, max_rows: int) -> np.ndarray:
    """The [N, F] float64 rows of the features tensor."""
    name, f = tensor.name, schema.n_features
    if tensor.datatype not in FLOAT_DATATYPES:
        raise InvalidInput(f"input {name!r} must be FP32 or FP64, got {tensor.datatype}.")
    shape = list(tensor.shape)
    if len(shape) != 2 or shape[1] != f:
        raise InvalidInput(
            f"input {name!r} must have shape [N, {f}] ({f} features per row), got {shape}."
        )
    if not 1 <= shape[0] <= max_rows:
        raise InvalidInput(
            f"input {name!r} must have 1 to {max_rows} rows (max_rows), got {shape[0]}."
        )
    try:
        flat = np.asarray(tensor.data.root, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as err:
        raise InvalidInput(f"input {name!r} data must be numbers: {err}.") from None
    if flat.size != shape[0] * f:
        raise InvalidInput(
            f"input {name!r} of shape {shape} needs {shape[0] * f} values, got {flat.size}."
        )
    rows = flat.reshape(shape[0], f)
    _check_finite(name, rows)
    return rows


def _check_finite(name: str, rows: np.ndarray) -> None:
    finite = np.isfinite(rows)
    if finite.all():
        return
    row, col = (int(i) for i in np.argwhere(~finite)[0])
    raise InvalidInput(
        f"input {name!r} must hold finite numbers (no NaN, inf or null), "
        f"got {rows[row, col]} at row {row}, feature {col}."
    )


def requested_outputs(request: InferenceRequest, schema: Schema) -> tuple[str, ...]:
    """The outputs a request asks for (all of them when it names none)."""
    available = available_outputs(schema)
    if not request.outputs:
        return available
    names = tuple(output.name for output in request.outputs)
    unknown = [n for n in names if n not in available]
    if unknown:
        raise InvalidInput(f"unknown outputs {unknown}; available: {', '.join(available)}.")
    return names
