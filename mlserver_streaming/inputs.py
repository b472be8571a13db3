"""Reading request tensors with errors that name the input, the rule and what arrived."""

from __future__ import annotations

from mlserver.types import InferenceRequest, RequestInput

from .errors import InvalidInput

INPUT_PROMPT = "prompt"
"""The one-string input of the text runtimes (the generator's and the word model's)."""


def find_input(request: InferenceRequest, name: str, expected: str) -> RequestInput:
    """The input called `name`; `expected` describes it for the error message."""
    for tensor in request.inputs:
        if tensor.name == name:
            return tensor
    got = [t.name for t in request.inputs]
    raise InvalidInput(f"input {name!r} is required ({expected}), got inputs {got}.")


def single_string(request: InferenceRequest, name: str) -> str:
    """The one UTF-8 string of a BYTES input (REST sends str, gRPC sends bytes)."""
    tensor = find_input(request, name, "BYTES, one string")
    if tensor.datatype != "BYTES":
        raise InvalidInput(f"input {name!r} must be BYTES, got {tensor.datatype}.")
    values = tensor.data.root if isinstance(tensor.data.root, list) else [tensor.data.root]
    if len(values) != 1:
        raise InvalidInput(f"input {name!r} must hold one string, got {len(values)}.")
    value = values[0]
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError as err:
            raise InvalidInput(
                f"input {name!r} must be valid UTF-8, got byte 0x{value[err.start]:02x} "
                f"at position {err.start}."
            ) from err
    if not isinstance(value, str):
        raise InvalidInput(f"input {name!r} must hold a string, got {type(value).__name__}.")
    return value
