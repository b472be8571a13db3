"""V2 output tensors through MLServer's codecs, with the shapes the data really has.

The codecs describe a 1-D array of N values as [N, 1] and one string as [1, 1]; clients
(and model metadata) expect [N] and [1].
"""

from __future__ import annotations

import numpy as np
from mlserver.codecs import NumpyCodec, StringCodec
from mlserver.types import ResponseOutput


def encode_array(name: str, array: np.ndarray) -> ResponseOutput:
    """NumpyCodec's tensor with the array's own shape ([N] stays [N])."""
    output = NumpyCodec.encode_output(name, array)
    output.shape = list(array.shape)
    return output


def encode_text(name: str, text: str) -> ResponseOutput:
    """One string as a BYTES tensor of shape [1]."""
    output = StringCodec.encode_output(name, [text], use_bytes=True)
    output.shape = [1]
    return output
