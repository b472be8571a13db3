"""The engine core and its loop: commands in, step outputs out, failures survived."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mlserver_streaming.events import FinishReason
from mlserver_streaming.text.core.engine_core import EngineCore, run_engine_loop
from mlserver_streaming.text.core.messages import Cancel, Command, Stop, Submit
from mlserver_streaming.text.core.scheduler import Scheduler
from mlserver_streaming.text.core.step_output import StepOutput
from mlserver_streaming.text.sample.params import GenerationParams
from mlserver_streaming.text.tokenizer import HFTokenizer
from tests.fakes import FakeEngine

TOKENIZER = Path(__file__).parents[3] / "model-repo" / "shakespeare" / "tokenizer.json"


@pytest.fixture(scope="module")
def tokenizer() -> HFTokenizer:
    return HFTokenizer.from_file(TOKENIZER)


def make_core(tokenizer, engine: FakeEngine) -> EngineCore:
    scheduler = Scheduler(engine, max_running=engine.max_slots, prefill_chunk_tokens=64)
    return EngineCore(scheduler, tokenizer)


def submit(rid: int, max_tokens: int = 5, deadline: float = 1e12) -> Submit:
    params = GenerationParams(max_tokens=max_tokens, temperature=0.8, seed=rid)
    return Submit(rid, [10, 11, 12], params, arrival=0.0, deadline=deadline)


class ScriptedInbox:
    """Hands out one batch of commands per receive; Stop when the script runs out."""

    def __init__(self, *batches: list[Command]) -> None:
        self.batches = list(batches)
        self.receives: list[bool] = []

    def receive(self, block: bool) -> list[Command]:
        self.receives.append(block)
        if self.batches:
            return self.batches.pop(0)
        return [Stop()] if block else []


def hidden(what: str, error: str | None) -> bool:
    """The client sees what failed and an error id, not the exception's text."""
    pattern = rf"{what} \(error id [0-9a-f]{{12}}\); the server log has the details\."
    return error is not None and re.fullmatch(pattern, error) is not None


def finals(outputs: list[StepOutput]) -> dict[int, FinishReason]:
    return {
        rid: d.finish_reason
        for out in outputs
        for rid, d in out.deltas.items()
        if d.finish_reason is not None
    }


def test_a_failed_step_ends_running_sequences_with_an_error_and_the_core_goes_on(tokenizer):
    engine = FakeEngine(4096, max_slots=2, fail_on_decode=True)
    core = make_core(tokenizer, engine)
    core.submit(submit(1))
    out = core.step()
    assert out.step_done and out.deltas[1].finish_reason is FinishReason.ERROR
    assert hidden("engine step failed", out.deltas[1].error)
    assert engine.free_slots() == 2 and not core.busy
    engine.fail_on_decode = False
    core.submit(submit(2, max_tokens=3))
    outputs = []
    while core.busy:
        outputs.append(core.step())
    assert finals(outputs) == {2: FinishReason.LENGTH}


def test_a_step_failing_in_decode_keeps_the_ends_the_step_made_before(tokenizer):
    engine = FakeEngine(4096, max_slots=2)
    core = make_core(tokenizer, engine)
    core.submit(submit(1))
    core.step()  # 1 runs
    core.submit(submit(2, deadline=0.0))  # past its deadline: reaped by the next step
    engine.fail_on_decode = True
    out = core.step()
    assert {rid: d.finish_reason for rid, d in out.deltas.items()} == {
        1: FinishReason.ERROR,
        2: FinishReason.TIMEOUT,
    }
    assert engine.free_slots() == 2 and not core.busy


def test_a_step_failing_in_prefill_ends_what_it_admitted(tokenizer):
    engine = FakeEngine(4096, max_slots=2)
    engine.fail_on.add("prefill")
    core = make_core(tokenizer, engine)
    core.submit(submit(1))
    core.submit(submit(2))
    out = core.step()
    assert {rid: d.finish_reason for rid, d in out.deltas.items()} == {
        1: FinishReason.ERROR,
        2: FinishReason.ERROR,
    }
    assert hidden("engine step failed", out.deltas[1].error)
    assert engine.free_slots() == 2 and not core.busy


def test_a_failed_allocation_ends_that_request_and_the_next_is_admitted(tokenizer):
    engine = FakeEngine(4096, max_slots=2)
    engine.fail_on.add("allocate")  # the first allocation only
    core = make_core(tokenizer, engine)
    core.submit(submit(1))
    core.submit(submit(2, max_tokens=3))
    outputs = [core.step()]
    assert outputs[0].deltas[1].finish_reason is FinishReason.ERROR
    assert hidden("no slot", outputs[0].deltas[1].error)
    while core.busy:
        outputs.append(core.step())
    assert finals(outputs) == {1: FinishReason.ERROR, 2: FinishReason.LENGTH}
    assert engine.free_slots() == 2


def test_the_loop_runs_every_request_to_its_end_then_stops(tokenizer):
    engine = FakeEngine(4096, max_slots=2)
    core = make_core(tokenizer, engine)
    inbox = ScriptedInbox([submit(1), submit(2), submit(3)])
    outputs: list[StepOutput] = []
    run_engine_loop(core, inbox, outputs.append)
    assert finals(outputs) == {rid: FinishReason.LENGTH for rid in (1, 2, 3)}
    tokens = {rid: 0 for rid in (1, 2, 3)}
    for out in outputs:
        for rid, delta in out.deltas.items():
            tokens[rid] += len(delta.token_ids)
    assert tokens == {1: 5, 2: 5, 3: 5}
    # It blocked only when idle: first, and after the work was done.
    assert inbox.receives[0] is True and inbox.receives[-1] is True
    assert not any(inbox.receives[1:-1])


def test_a_cancel_lands_at_the_next_step_and_stop_cancels_the_rest(tokenizer):
    engine = FakeEngine(4096, max_slots=1)
    core = make_core(tokenizer, engine)
    inbox = ScriptedInbox([submit(1, 10**4), submit(2, 10**4)], [], [Cancel(1)], [], [Stop()])
    outputs: list[StepOutput] = []
    run_engine_loop(core, inbox, outputs.append)
    assert finals(outputs) == {1: FinishReason.CANCELLED, 2: FinishReason.CANCELLED}
    assert "shutting down" in (outputs[-1].deltas[2].error or "")
    assert engine.free_slots() == 1


class MidDecodeInbox:
    """Request 1 when idle; request 2 at the first turn inside the first decode."""

    def __init__(self, engine: FakeEngine) -> None:
        self.engine = engine
        self.script = {"idle": [submit(1)], "decoding": [submit(2)]}

    def receive(self, block: bool) -> list[Command]:
        if block:
            return self.script.pop("idle", None) or [Stop()]
        if self.engine.decode_calls and "decoding" in self.script:
            return self.script.pop("decoding")
        return []


def test_requests_arriving_mid_decode_are_admitted_inside_that_step(tokenizer):
    engine = FakeEngine(4096, max_slots=2)
    core = make_core(tokenizer, engine)
    outputs: list[StepOutput] = []
    run_engine_loop(core, MidDecodeInbox(engine), outputs.append)
    first_step = next(i for i, out in enumerate(outputs) if out.step_done)
    early = [rid for out in outputs[: first_step + 1] for rid in out.deltas]
    assert early.count(2) == 1  # request 2's first token left before step 1 ended
    assert engine.decode_calls[0] == [0] and engine.decode_calls[1] == [0, 1]
    assert finals(outputs) == {1: FinishReason.LENGTH, 2: FinishReason.LENGTH}
