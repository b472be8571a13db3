"""Stream parameters split off a request's parameters, with clear errors."""

from __future__ import annotations

import pytest

from mlserver_streaming.errors import InvalidParameter
from mlserver_streaming.text.streams.params import StreamParams, split_stream_params


def test_generation_parameters_pass_through_and_stream_ones_are_typed():
    params, rest = split_stream_params({"background": True, "max_tokens": 4, "seed": 1})
    assert params == StreamParams(background=True)
    assert rest == {"max_tokens": 4, "seed": 1}


def test_resume_takes_a_stream_id_and_an_index_as_grpc_sends_them():
    params, _ = split_stream_params({"resume": "abc", "starting_after": "7"})
    assert params.follows == "abc" and params.starting_after == 7
    assert split_stream_params({"cancel": "abc"})[0].follows == "abc"
    assert split_stream_params({"background": "true"})[0].background is True


def test_a_resume_ignores_generation_parameters_but_refuses_typos():
    assert split_stream_params({"resume": "a", "max_tokens": 3})[0].resume == "a"
    with pytest.raises(InvalidParameter, match="unknown parameter 'max_tokenz'"):
        split_stream_params({"resume": "a", "max_tokenz": 3})


ID_RULE = "1 to 128 characters of A-Z, a-z, 0-9 and . _ ~ : -"
BAD = [
    (
        {"resume": ""},
        f"resume must be a stream id: {ID_RULE}, got ''.",
    ),
    (
        {"resume": 3},
        f"resume must be a stream id: {ID_RULE}, got 3.",
    ),
    (
        {"cancel": "a b"},
        f"cancel must be a stream id: {ID_RULE}, got 'a b'.",
    ),
    (
        {"resume": "x" * 5000},
        f"resume must be a stream id: {ID_RULE}, got '{'x' * 40}...'.",
    ),
    ({"resume": "a", "cancel": "b"}, "give resume or cancel, not both."),
    ({"resume": "a", "background": True}, "background applies to new streams"),
    ({"starting_after": 2}, "starting_after needs resume (or cancel)"),
    ({"resume": "a", "starting_after": -2}, "starting_after must be in [-1, inf), got -2."),
    ({"background": "yes"}, "background must be true or false, got 'yes'."),
]


@pytest.mark.parametrize(("raw", "message"), BAD, ids=[m[:30] for _, m in BAD])
def test_bad_stream_parameters_are_clear_errors(raw, message):
    with pytest.raises(InvalidParameter) as info:
        split_stream_params(raw)
    assert message in str(info.value)
