"""Messages to and from an engine driver survive pickling and read back by name."""

from __future__ import annotations

import pickle

from mlserver_streaming.events import FinishReason
from mlserver_streaming.text.core.messages import (
    Cancel,
    Failed,
    Submit,
    WireDelta,
    from_wire,
    to_wire,
)
from mlserver_streaming.text.core.step_output import StepOutput
from mlserver_streaming.text.sample.generation import Delta
from mlserver_streaming.text.sample.params import GenerationParams


def test_a_step_output_round_trips_through_a_pickled_report():
    out = StepOutput(
        deltas={
            3: Delta("Hi", [5, 6], [-0.5, -1.0], [((5, -0.5),), ((6, -1.0),)]),
            9: Delta("", [7], finish_reason=FinishReason.TIMEOUT, error="late", retryable=True),
        },
        admitted={3: 0.125},
        prompt_tokens=17,
        running=2,
        waiting=1,
        step_done=True,
    )
    report = pickle.loads(pickle.dumps(to_wire(out)))
    assert from_wire(report) == out
    # On the wire deltas are plain tuples, read back by field name.
    wire = WireDelta._make(report.deltas[1])
    assert (wire.request_id, wire.finish_reason, wire.error) == (9, "timeout", "late")


def test_commands_round_trip():
    params = GenerationParams(max_tokens=4, temperature=0.5, seed=11, stop=("\n",))
    for command in (Submit(1, [1, 2], params, 1.5, 9.5), Cancel(1), Failed("no")):
        assert pickle.loads(pickle.dumps(command)) == command
