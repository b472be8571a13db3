"""The stream contract's building blocks: finish reasons, final and error events, the skeleton."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

from mlserver.types import InferenceRequest, InferenceResponse

from mlserver_streaming.errors import InvalidInput
from mlserver_streaming.events import (
    ERROR,
    FINAL,
    FINISH_REASON,
    REQUEST_INDEX,
    FinishReason,
    ParamValue,
    event,
    final_event,
    stream_requests,
)
from mlserver_streaming.inputs import single_string
from mlserver_streaming.tensors import encode_text


class Model:
    name = "m"
    version = "v1"


def test_finish_reason_values_are_the_wire_values() -> None:
    assert [r.value for r in FinishReason] == [
        "stop",
        "eos",
        "length",
        "cancelled",
        "error",
        "timeout",
        "complete",
    ]
    assert f"{FinishReason.EOS}" == "eos"
    params = final_event(Model(), FinishReason.COMPLETE).parameters
    assert params is not None and params.model_dump()[FINISH_REASON] == "complete"


async def requests(*prompts: str) -> AsyncIterator[InferenceRequest]:
    for prompt in prompts:
        tensor = {"name": "prompt", "datatype": "BYTES", "shape": [1], "data": [prompt]}
        yield InferenceRequest(inputs=[tensor])


async def echo(
    payload: InferenceRequest, tags: dict[str, ParamValue]
) -> AsyncIterator[InferenceResponse]:
    text = single_string(payload, "prompt")
    if text == "bad":
        raise InvalidInput("input 'prompt' must not be bad.")
    yield event(Model(), [encode_text("out", text)], **tags)
    if text == "crash":
        raise RuntimeError("mid-stream")
    yield final_event(Model(), FinishReason.STOP, [], **tags)


def params(response: InferenceResponse) -> dict:
    return response.parameters.model_dump(exclude_none=True) if response.parameters else {}


async def test_each_request_is_tagged_and_a_failure_ends_only_that_request() -> None:
    empty = [encode_text("out", "")]
    got = [
        params(r)
        async for r in stream_requests(Model(), requests("a", "bad", "crash", "b"), echo, empty)
    ]
    assert [(p[REQUEST_INDEX], p.get(FINAL, False), p.get(FINISH_REASON)) for p in got] == [
        (0, False, None),
        (0, True, "stop"),
        (1, True, "error"),
        (2, False, None),
        (2, True, "error"),
        (3, False, None),
        (3, True, "stop"),
    ]
    assert got[2][ERROR] == "input 'prompt' must not be bad."
    assert re.fullmatch(
        r"internal error \(error id [0-9a-f]{12}\); the server log has the details\.", got[4][ERROR]
    )  # the exception's own text ("mid-stream") stays in the server log
