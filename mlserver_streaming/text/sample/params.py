"""Text-generation parameters: normalised from V2 request parameters, then verified once.

Shaped after vLLM's `sampling_params.py`: inputs are normalised first (numeric strings become
numbers, one stop string becomes a tuple), then one verify step checks every range. Every
value may arrive as a string, because gRPC's `InferParameter` drops floats and lists.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from ...errors import InvalidParameter
from ...params import RESERVED_KEYS, as_float, as_int, as_str_list, check_range, reject_unknown

MAX_STOP_SEQUENCES = 8
MAX_STOP_LENGTH = 128
MAX_LOGPROBS = 20
MAX_SEED = 2**63 - 1
MAX_TEMPERATURE = 10.0
MAX_REPETITION_PENALTY = 10.0
MAX_STREAM_INTERVAL = 64


def random_seed() -> int:
    """A fresh seed in [0, 2**63 - 1], drawn when the request names none."""
    return secrets.randbelow(MAX_SEED + 1)


@dataclass(frozen=True, kw_only=True)
class GenerationParams:
    """One request's validated generation parameters; inside the engine, trust them."""

    max_tokens: int
    """New tokens to generate at most, in [1, cap]; the cap comes from the model's settings."""
    temperature: float = 1.0
    """Softmax temperature in [0, 10]; 0 means greedy (argmax, no randomness used)."""
    top_k: int = 0
    """Keep only the k most likely tokens, k >= 0; 0 disables the filter."""
    top_p: float = 1.0
    """Keep the smallest set of tokens whose probability reaches p, in (0, 1]; 1 disables it."""
    seed: int = field(default_factory=random_seed)
    """Sampling seed in [0, 2**63 - 1]; drawn at random when absent and reported back."""
    stop: tuple[str, ...] = ()
    """Up to 8 stop sequences of 1 to 128 characters; the matched sequence is never emitted."""
    repetition_penalty: float = 1.0
    """CTRL-style penalty in (0, 10] on tokens of prompt and output; 1 switches it off."""
    logprobs: int | None = None
    """None: no logprobs; n in [0, 20]: the chosen token's logprob plus the n most likely."""
    stream_interval: int = 0
    """Tokens per streamed event, in [0, 64] (SGLang's and vLLM's `stream_interval`): n sends
    the tokens n at a time; 0 (auto) sends every token while few sequences run, and groups
    them under load (see TextGenerationSettings.auto_stream_step). The first text and the
    end are always sent at once."""

    def __post_init__(self) -> None:
        check_range("max_tokens", self.max_tokens, 1)
        check_range("temperature", self.temperature, 0, MAX_TEMPERATURE)
        check_range("top_k", self.top_k, 0)
        check_range("top_p", self.top_p, 0, 1, low_open=True)
        check_range("seed", self.seed, 0, MAX_SEED)
        _check_stop(self.stop)
        check_range(
            "repetition_penalty", self.repetition_penalty, 0, MAX_REPETITION_PENALTY, low_open=True
        )
        if self.logprobs is not None:
            check_range("logprobs", self.logprobs, 0, MAX_LOGPROBS)
        check_range("stream_interval", self.stream_interval, 0, MAX_STREAM_INTERVAL)

    @property
    def greedy(self) -> bool:
        """True when the next token is the argmax: sampling consumes no randomness."""
        return self.temperature == 0

    @classmethod
    def from_request(
        cls, raw: Mapping[str, Any], defaults: Mapping[str, Any], max_tokens_cap: int
    ) -> GenerationParams:
        """Build from V2 request parameters over the model's (typed, validated) defaults;
        raise InvalidParameter.

        MLServer's own keys (content_type, headers, id) are ignored; any other unknown key fails.
        """
        values = {**defaults, **normalise(raw)}
        values.setdefault("max_tokens", max_tokens_cap)
        check_range("max_tokens", values["max_tokens"], 1, max_tokens_cap)
        return cls(**values)


PARAMETER_NAMES: tuple[str, ...] = tuple(f.name for f in fields(GenerationParams))
"""The request parameters text generation understands, in declaration order."""


def _as_optional_int(name: str, value: Any) -> int | None:
    return None if value is None else as_int(name, value)


def _as_stop(name: str, value: Any) -> tuple[str, ...]:
    return tuple(as_str_list(name, value))


# Each field's type says how a raw value (any JSON value, or a gRPC string) becomes it, and
# which JSON types other schemas built from these fields accept (`optional_fields`).
_BY_TYPE: dict[str, tuple[Callable[[str, Any], Any], Any]] = {
    "int": (as_int, int),
    "float": (as_float, float),
    "int | None": (_as_optional_int, int),
    "tuple[str, ...]": (_as_stop, str | list[str]),
}
_NORMALISERS = {f.name: _BY_TYPE[str(f.type)][0] for f in fields(GenerationParams)}
_JSON_TYPES = {f.name: _BY_TYPE[str(f.type)][1] for f in fields(GenerationParams)}


def optional_fields(names: Sequence[str] = PARAMETER_NAMES) -> dict[str, Any]:
    """Pydantic field definitions of the named parameters, each optional (None: not set),
    typed as a JSON body carries them: for the model defaults in the settings and the
    OpenAI request bodies, so every schema of these parameters comes from this one."""
    return {name: (_JSON_TYPES[name] | None, None) for name in names}


def normalise(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Typed values from raw parameters: numeric strings → numbers, one stop string → tuple.

    Absent and null values are left out, so the model default (or the field default) applies;
    a null seed therefore means "draw one".
    """
    reject_unknown(raw, PARAMETER_NAMES)
    return {
        key: _NORMALISERS[key](key, value)
        for key, value in raw.items()
        if key not in RESERVED_KEYS and value is not None
    }


def _check_stop(stop: tuple[str, ...]) -> None:
    if len(stop) > MAX_STOP_SEQUENCES:
        raise InvalidParameter(
            f"stop must hold at most {MAX_STOP_SEQUENCES} sequences, got {len(stop)}."
        )
    for sequence in stop:
        if not isinstance(sequence, str) or not 1 <= len(sequence) <= MAX_STOP_LENGTH:
            raise InvalidParameter(
                f"each stop sequence must be a string of 1 to {MAX_STOP_LENGTH} characters, "
                f"got {sequence!r}."
            )
