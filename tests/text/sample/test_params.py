"""GenerationParams: normalisation of REST and gRPC values, then one verify step."""

from __future__ import annotations

import pytest

from mlserver_streaming.errors import InvalidParameter
from mlserver_streaming.text.sample.params import MAX_SEED, PARAMETER_NAMES, GenerationParams

CAP = 256


def build(raw: dict[str, object], defaults: dict[str, object] | None = None) -> GenerationParams:
    return GenerationParams.from_request(raw, defaults or {}, max_tokens_cap=CAP)


def test_parameter_names_are_the_fields() -> None:
    assert PARAMETER_NAMES == (
        "max_tokens",
        "temperature",
        "top_k",
        "top_p",
        "seed",
        "stop",
        "repetition_penalty",
        "logprobs",
        "stream_interval",
    )


EXPECTED = GenerationParams(
    max_tokens=40,
    temperature=0.7,
    top_k=40,
    top_p=0.9,
    seed=7,
    stop=("\n\n", "KING:"),
    repetition_penalty=1.2,
    logprobs=3,
    stream_interval=4,
)


def test_params_are_keyword_only() -> None:
    with pytest.raises(TypeError):
        GenerationParams(40, 0.7)  # type: ignore[misc]


def test_rest_values() -> None:
    params = build(
        {
            "max_tokens": 40,
            "temperature": 0.7,
            "top_k": 40,
            "top_p": 0.9,
            "seed": 7,
            "stop": ["\n\n", "KING:"],
            "repetition_penalty": 1.2,
            "logprobs": 3,
            "stream_interval": 4,
        }
    )
    assert params == EXPECTED


def test_grpc_values_are_all_strings() -> None:
    raw = {
        "max_tokens": "40",
        "temperature": "0.7",
        "top_k": "40",
        "top_p": "0.9",
        "seed": "7",
        "stop": '["\\n\\n", "KING:"]',
        "repetition_penalty": "1.2",
        "logprobs": "3",
        "stream_interval": "4",
    }
    assert build(raw) == EXPECTED


@pytest.mark.parametrize(
    ("stop", "expected"),
    [
        pytest.param("KING:", ("KING:",), id="one-string"),
        pytest.param("[Exit", ("[Exit",), id="bracket-but-not-json"),
        pytest.param("[]", (), id="empty-json-array"),
        pytest.param([], (), id="empty-list"),
    ],
)
def test_stop_forms(stop: object, expected: tuple[str, ...]) -> None:
    assert build({"stop": stop}).stop == expected


def test_mlserver_keys_are_ignored() -> None:
    params = build({"content_type": "str", "headers": {"x": "1"}, "id": "r1", "seed": 1})
    assert params.seed == 1


def test_defaults_apply_and_request_wins() -> None:
    params = build({"temperature": "0"}, {"temperature": 0.8, "top_k": 20, "max_tokens": 32})
    assert (params.temperature, params.top_k, params.max_tokens) == (0.0, 20, 32)
    assert params.greedy


def test_field_defaults_and_max_tokens_cap() -> None:
    params = build({})
    assert params.max_tokens == CAP
    assert (params.temperature, params.top_k, params.top_p) == (1.0, 0, 1.0)
    assert (params.stop, params.repetition_penalty, params.logprobs) == ((), 1.0, None)


def test_missing_seed_is_drawn_and_kept() -> None:
    params = build({})
    assert isinstance(params.seed, int)
    assert 0 <= params.seed <= MAX_SEED
    assert build({"seed": None}).seed != params.seed  # equal once in 2**63 draws


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"top_p": 1.5}, "top_p must be in (0, 1], got 1.5."),
        ({"top_p": "0"}, "top_p must be in (0, 1], got 0."),
        ({"max_tokens": 1000}, "max_tokens must be in [1, 256], got 1000."),
        ({"max_tokens": 0}, "max_tokens must be in [1, 256], got 0."),
        ({"temperature": "hot"}, "temperature must be a number, got 'hot'."),
        ({"temperature": 10.5}, "temperature must be in [0, 10], got 10.5."),
        ({"temperature": True}, "temperature must be a number, got True."),
        ({"max_tokens": True}, "max_tokens must be an integer, got True."),
        ({"top_k": "4.5"}, "top_k must be an integer, got '4.5'."),
        ({"top_k": -1}, "top_k must be in [0, inf), got -1."),
        ({"seed": -1}, "seed must be in [0, 9223372036854775807], got -1."),
        ({"repetition_penalty": 0}, "repetition_penalty must be in (0, 10], got 0."),
        ({"logprobs": 21}, "logprobs must be in [0, 20], got 21."),
        ({"stream_interval": -1}, "stream_interval must be in [0, 64], got -1."),
        ({"stream_interval": 65}, "stream_interval must be in [0, 64], got 65."),
        ({"stop": 5}, "stop must be a string, a list of strings or a JSON array"),
        ({"stop": "[1, 2]"}, "stop must be a string, a list of strings or a JSON array"),
        ({"stop": [""]}, "each stop sequence must be a string of 1 to 128 characters, got ''."),
        ({"stop": ["x" * 129]}, "each stop sequence must be a string of 1 to 128 characters"),
        ({"stop": [str(i) for i in range(9)]}, "stop must hold at most 8 sequences, got 9."),
        ({"temprature": 0.5}, "unknown parameter 'temprature'; allowed: "),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_invalid_values(raw: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidParameter) as info:
        build(raw)
    assert str(info.value).startswith(message)
    assert info.value.status_code == 400


def test_unknown_key_lists_allowed_keys() -> None:
    with pytest.raises(InvalidParameter, match="allowed: .*max_tokens.*top_p"):
        build({"temprature": 0.5})
