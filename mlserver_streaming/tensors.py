"""V2 output tensors with the shapes the data really has.

MLServer's codecs describe a 1-D array of N values as [N, 1] and one string as [1, 1];
clients (and model metadata) expect [N] and [1]. Text and integer lists, sent once per
token, are built directly: the same tensor as the codecs' (content type included), for a
third of the cost.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from mlserver.codecs import NumpyCodec
from mlserver.types import ResponseOutput

_STR = {"content_type": "str"}  # what StringCodec / NumpyCodec mark their outputs with
_NP = {"content_type": "np"}


def encode_array(name: str, array: np.ndarray) -> ResponseOutput:
    """NumpyCodec's tensor with the array's own shape ([N] stays [N])."""
    output = NumpyCodec.encode_output(name, array)
    output.shape = list(array.shape)
    return output


def encode_ints(name: str, values: Sequence[int]) -> ResponseOutput:
    """An INT64 tensor of shape [N]: what `encode_array` gives for an int64 array."""
    return ResponseOutput(
        name=name, shape=[len(values)], datatype="INT64", parameters=_NP, data=list(values)
    )


def encode_text(name: str, text: str) -> ResponseOutput:
    """One string as a BYTES tensor of shape [1] (StringCodec's tensor, with bytes)."""
    return ResponseOutput(
        name=name, shape=[1], datatype="BYTES", parameters=_STR, data=[text.encode()]
    )
