"""`parse_extra`: every refusal names the model, the key, the rule and what was sent."""

from __future__ import annotations

import pytest
from mlserver import MLModel
from mlserver.settings import ModelParameters, ModelSettings
from pydantic import Field

from mlserver_streaming.errors import InvalidSettings
from mlserver_streaming.settings import RuntimeSettings, parse_extra


class Knobs(RuntimeSettings):
    """A runtime's `parameters.extra` with one bounded field."""

    chunk_size: int = Field(8, ge=1, le=64)
    """Rows per chunk (1–64)."""


def settings(extra: dict | None) -> ModelSettings:
    parameters = None if extra is None else ModelParameters(extra=extra)
    return ModelSettings(name="knobs", implementation=MLModel, parameters=parameters)


def refusal(extra: dict) -> str:
    with pytest.raises(InvalidSettings) as info:
        parse_extra(settings(extra), Knobs)
    assert info.value.status_code == 422
    return str(info.value)


def test_no_parameters_give_the_defaults():
    assert parse_extra(settings(None), Knobs) == Knobs()
    assert parse_extra(settings({}), Knobs).chunk_size == 8


def test_valid_values_are_parsed():
    assert parse_extra(settings({"chunk_size": 64}), Knobs).chunk_size == 64


def test_an_unknown_key_is_refused_by_name():
    assert refusal({"chunk_sise": 4}) == (
        "model 'knobs': invalid parameters.extra: "
        "chunk_sise: Extra inputs are not permitted (got 4)"
    )


@pytest.mark.parametrize(
    ("value", "rule"),
    [(0, "greater than or equal to 1"), (65, "less than or equal to 64")],
    ids=["below", "above"],
)
def test_an_out_of_range_value_names_the_bound(value, rule):
    assert refusal({"chunk_size": value}) == (
        f"model 'knobs': invalid parameters.extra: chunk_size: Input should be {rule} (got {value})"
    )


def test_a_wrong_type_names_the_type_wanted():
    assert refusal({"chunk_size": "many"}) == (
        "model 'knobs': invalid parameters.extra: chunk_size: Input should be a valid "
        "integer, unable to parse string as an integer (got 'many')"
    )


def test_every_problem_is_listed():
    message = refusal({"chunk_size": 0, "extra_key": True})
    assert "chunk_size: Input should be greater than or equal to 1 (got 0)" in message
    assert "; extra_key: Extra inputs are not permitted (got True)" in message
