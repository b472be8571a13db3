"""Request parameters → typed values, the same way for REST and gRPC.

Over gRPC, MLServer's `InferParameter` carries only bool, int64 and string: floats and
lists are dropped on the way in. So every numeric parameter also accepts a numeric
string ("0.7"), and list parameters accept a JSON array in a string.
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection, Mapping
from typing import Any

from mlserver.types import InferenceRequest

from .errors import InvalidParameter

# Keys MLServer itself puts into request parameters; never the client's business to validate.
MLSERVER_KEYS = frozenset({"content_type", "headers", "id"})
# Protocol-level keys that standard V2 clients add for the server, not the model (tritonclient:
# sequence batching, priority, timeout, binary outputs; Triton reserves the `triton_` prefix
# too). This server implements none of them, so they are accepted and change nothing.
PROTOCOL_KEYS = frozenset(
    {"binary_data_output", "sequence_id", "sequence_start", "sequence_end", "priority", "timeout"}
)
PROTOCOL_PREFIX = "triton_"
RESERVED_KEYS = MLSERVER_KEYS | PROTOCOL_KEYS


def is_reserved(key: str) -> bool:
    """True for keys that are MLServer's or the protocol's, never a model parameter."""
    return key in RESERVED_KEYS or key.startswith(PROTOCOL_PREFIX)


def request_parameters(request: InferenceRequest) -> dict[str, Any]:
    """The client's request-level parameters, without MLServer's own keys."""
    if request.parameters is None:
        return {}
    raw = request.parameters.model_dump(exclude_none=True)
    return {k: v for k, v in raw.items() if not is_reserved(k)}


def reject_unknown(params: Mapping[str, Any], allowed: Collection[str]) -> None:
    """Fail on parameters nobody reads: a typo must not be silently ignored."""
    unknown = sorted(k for k in set(params) - set(allowed) if not is_reserved(k))
    if unknown:
        names = ", ".join(repr(k) for k in unknown)
        raise InvalidParameter(f"unknown parameter {names}; allowed: {', '.join(sorted(allowed))}.")


def as_int(name: str, value: Any) -> int:
    """An integer from an int or a decimal string (bools are not numbers here)."""
    if isinstance(value, bool):
        raise InvalidParameter(f"{name} must be an integer, got {value!r}.")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise InvalidParameter(f"{name} must be an integer, got {value!r}.")


def as_bool(name: str, value: Any) -> bool:
    """A bool from a bool or the string "true"/"false" (any case)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise InvalidParameter(f"{name} must be true or false, got {value!r}.")


def as_float(name: str, value: Any) -> float:
    """A finite number from an int, a float or a numeric string."""
    if isinstance(value, bool):
        raise InvalidParameter(f"{name} must be a number, got {value!r}.")
    number: float | None = None
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            number = None
    if number is None or not math.isfinite(number):
        raise InvalidParameter(f"{name} must be a number, got {value!r}.")
    return number


def as_str_list(name: str, value: Any) -> list[str]:
    """A list of strings from a list, one string, or a JSON array in a string (gRPC)."""
    if isinstance(value, str):
        stripped = value.strip()
        if stripped.startswith("["):
            try:
                value = json.loads(stripped)
            except json.JSONDecodeError:
                return [value]
        else:
            return [value]
    if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        return list(value)
    raise InvalidParameter(
        f"{name} must be a string, a list of strings or a JSON array of strings, got {value!r}."
    )


def check_range(
    name: str,
    value: float,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
) -> None:
    """Raise with a message like "top_p must be in (0, 1], got 1.5."."""
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and value > high
    if too_low or too_high:
        left = "(" if low_open else "["
        low_s = "-inf" if low is None else _fmt(low)
        high_s = "inf)" if high is None else f"{_fmt(high)}]"
        raise InvalidParameter(f"{name} must be in {left}{low_s}, {high_s}, got {_fmt(value)}.")


def _fmt(number: float) -> str:
    return str(int(number)) if float(number).is_integer() else str(number)
