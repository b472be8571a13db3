"""Model metadata with real shapes, read off the loaded estimator.

`GET /v2/models/{name}` should tell a client the feature count F, the class count C and
the class order. model-settings.json may state inputs/outputs itself; then they must
agree with the estimator (a stale file fails the load), otherwise they are filled in.
The class order travels as a JSON array in a string parameter (`classes`), because
gRPC's `InferParameter` has no list type.
"""

from __future__ import annotations

import json

from mlserver.codecs.numpy import to_datatype
from mlserver.types import MetadataTensor, Parameters

from ..errors import InvalidSettings
from .features import INPUT_FEATURES
from .outputs import OUTPUT_CONFIDENCE, OUTPUT_LABEL, OUTPUT_PROBABILITIES, wire_labels
from .scoring import Schema

META_CLASSES = "classes"
# Declared input datatype; FP64 is accepted too (see features.FLOAT_DATATYPES).
INPUT_DATATYPE = "FP32"


def class_order(schema: Schema) -> list[str]:
    """The labels in `probabilities` column order, as strings."""
    return [str(label) for label in wire_labels(schema.classes).tolist()]


def input_metadata(schema: Schema) -> list[MetadataTensor]:
    """The one input: features [-1, F]."""
    return [
        MetadataTensor(name=INPUT_FEATURES, datatype=INPUT_DATATYPE, shape=[-1, schema.n_features])
    ]


def output_metadata(schema: Schema) -> list[MetadataTensor]:
    """label [-1], and with predict_proba: probabilities [-1, C], confidence [-1]."""
    classes = Parameters(**{META_CLASSES: json.dumps(class_order(schema))})
    label_type = to_datatype(wire_labels(schema.classes).dtype)
    tensors = [
        MetadataTensor(name=OUTPUT_LABEL, datatype=label_type, shape=[-1], parameters=classes)
    ]
    if schema.has_proba:
        n_classes = len(schema.classes)
        tensors += [
            MetadataTensor(
                name=OUTPUT_PROBABILITIES,
                datatype="FP32",
                shape=[-1, n_classes],
                parameters=classes,
            ),
            MetadataTensor(name=OUTPUT_CONFIDENCE, datatype="FP32", shape=[-1]),
        ]
    return tensors


def reconcile(
    declared: list[MetadataTensor], derived: list[MetadataTensor], source: str
) -> list[MetadataTensor]:
    """The declared tensors if they agree with the estimator's, else the derived ones."""
    if not declared:
        return derived
    known = {tensor.name: tensor for tensor in derived}
    for tensor in declared:
        real = known.get(tensor.name)
        if real is None:
            raise InvalidSettings(
                f"{source}: declares tensor {tensor.name!r}; this estimator has {', '.join(known)}."
            )
        if not _shapes_agree(tensor.shape, real.shape):
            raise InvalidSettings(
                f"{source}: tensor {tensor.name!r} is declared with shape {tensor.shape}, "
                f"but the estimator gives {real.shape} (-1 = any)."
            )
    return declared


def _shapes_agree(declared: list[int], real: list[int]) -> bool:
    return len(declared) == len(real) and all(
        d == r or -1 in (d, r) for d, r in zip(declared, real, strict=True)
    )
