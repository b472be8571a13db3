"""The direct tensor builders give exactly the codecs' tensors (with the real shapes)."""

import numpy as np
import pytest
from mlserver.codecs import NumpyCodec, StringCodec
from mlserver.grpc.converters import ModelInferResponseConverter
from mlserver.types import InferenceResponse

from mlserver_streaming.tensors import encode_array, encode_ints, encode_text


def on_both_wires(output) -> tuple[dict, object]:
    response = InferenceResponse(model_name="m", outputs=[output])
    return response.model_dump(), ModelInferResponseConverter.from_types(response)


@pytest.mark.parametrize("values", [[], [7], [0, 4095, 2**40]], ids=["none", "one", "several"])
def test_encode_ints_is_numpy_codecs_tensor(values):
    expected = NumpyCodec.encode_output("ids", np.asarray(values, dtype=np.int64))
    expected.shape = [len(values)]
    assert on_both_wires(encode_ints("ids", values)) == on_both_wires(expected)
    assert encode_array("ids", np.asarray(values, dtype=np.int64)) == expected


@pytest.mark.parametrize("text", ["", " the", "ĉ — naïve 🌍\n"], ids=["empty", "ascii", "unicode"])
def test_encode_text_is_string_codecs_tensor(text):
    expected = StringCodec.encode_output("text", [text], use_bytes=True)
    expected.shape = [1]
    assert on_both_wires(encode_text("text", text)) == on_both_wires(expected)
    assert StringCodec.decode_output(encode_text("text", text)) == [text]
