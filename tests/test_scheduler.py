"""Continuous batching, admission control, cancellation and deadlines, with a fake engine."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from tokenizers import Tokenizer

from mlserver_streaming.errors import ServerAtCapacity
from mlserver_streaming.text.generation import Delta, Generation
from mlserver_streaming.text.params import GenerationParams
from mlserver_streaming.text.scheduler import Scheduler, SequenceRequest
from mlserver_streaming.text.stopping import FinishReason

from .fakes import FakeEngine

TOKENIZER = Path(__file__).parents[1] / "model-repo" / "shakespeare" / "tokenizer.json"


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return Tokenizer.from_file(str(TOKENIZER))


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def make_request(
    tokenizer, prompt_len=3, deadline=100.0, **params
) -> tuple[SequenceRequest, list[Delta]]:
    params = {"max_tokens": 20, "temperature": 0.8, "seed": 7, **params}
    generation = Generation(
        list(range(10, 10 + prompt_len)), GenerationParams(**params), tokenizer, None
    )
    deltas: list[Delta] = []
    return SequenceRequest(generation, deltas.append, deadline=deadline, arrival=0.0), deltas


def make_scheduler(engine, clock=None, **kw) -> Scheduler:
    kw = {"max_running": engine.max_slots, "max_waiting": 4, "prefill_chunk_tokens": 64, **kw}
    return Scheduler(engine, clock=clock or Clock(), **kw)


def run_until_done(scheduler: Scheduler, limit: int = 500) -> None:
    for _ in range(limit):
        if not (scheduler.running or scheduler.waiting):
            return
        scheduler.step()
    raise AssertionError("scheduler did not drain")


def text_of(deltas: list[Delta]) -> tuple[str, list[int]]:
    return "".join(d.text for d in deltas), [t for d in deltas for t in d.token_ids]


def test_new_request_joins_the_running_batch_at_the_next_step(tokenizer):
    engine = FakeEngine(4096, max_slots=4)
    scheduler = make_scheduler(engine)
    a, _ = make_request(tokenizer)
    scheduler.submit(a)
    for _ in range(3):
        scheduler.step()
    b, _ = make_request(tokenizer, seed=8)
    scheduler.submit(b)
    scheduler.step()  # b prefills, samples its first token, then decodes beside a
    assert engine.prefill_batches[-1] == [b.slot]
    assert engine.decode_calls[-1] == [a.slot, b.slot]
    assert b.generation.completion_tokens == 2
    scheduler.step()
    assert engine.decode_calls[-1] == [a.slot, b.slot]
    assert a.generation.finish_reason is None


def test_request_arriving_during_a_decode_gets_its_first_token_before_that_decode_ends(
    tokenizer,
):
    engine = FakeEngine(4096, max_slots=4)
    scheduler = make_scheduler(engine)
    a, _ = make_request(tokenizer)
    b, b_deltas = make_request(tokenizer, seed=8)
    scheduler.submit(a)
    scheduler.step()
    seen_in_decode = []

    def arrive() -> None:  # the engine process reads its pipe here
        if not seen_in_decode:
            scheduler.submit(b)
        seen_in_decode.append(b.generation.completion_tokens)

    scheduler.poll = arrive
    scheduler.step()  # a decodes; b arrives after its first layer
    assert engine.decode_calls[-1] == [a.slot]
    assert engine.prefill_batches[-1] == [b.slot]
    assert seen_in_decode == [0] and b.generation.completion_tokens == 1
    assert [len(d.token_ids) for d in b_deltas] == [1]
    scheduler.step()
    assert engine.decode_calls[-1] == [a.slot, b.slot]


def test_auto_stream_interval_groups_tokens_only_when_many_sequences_run(tokenizer):
    engine = FakeEngine(4096, max_slots=4)
    scheduler = make_scheduler(engine, auto_stream_step=2)
    alone, alone_deltas = make_request(tokenizer, max_tokens=12)
    scheduler.submit(alone)
    run_until_done(scheduler)
    crowd = [make_request(tokenizer, seed=i, max_tokens=12) for i in range(4)]
    for request, _ in crowd:
        scheduler.submit(request)
    run_until_done(scheduler)
    assert {len(d.token_ids) for d in alone_deltas[:-1]} == {1}  # 1 running: every token
    for _, deltas in crowd:  # 4 running, a step of 2: two tokens per event after the first
        sizes = [len(d.token_ids) for d in deltas]
        assert sizes[0] == 1 and all(n >= 2 for n in sizes[1:-1]), sizes
        assert sum(sizes) == 12


def test_prompts_arriving_together_share_one_prefill_forward(tokenizer):
    engine = FakeEngine(4096, max_slots=4)
    scheduler = make_scheduler(engine, prefill_chunk_tokens=20)
    requests = [make_request(tokenizer, seed=i, prompt_len=8)[0] for i in range(3)]
    for request in requests:
        scheduler.submit(request)
    scheduler.step()  # 20 tokens of budget: two whole prompts and 4 tokens of the third
    assert engine.prefill_batches == [[r.slot for r in requests]]
    assert [n for _, n in engine.prefill_calls] == [8, 8, 4]
    assert engine.decode_calls == [[requests[0].slot, requests[1].slot]]
    scheduler.step()
    assert engine.prefill_calls[-1] == (requests[2].slot, 4)
    assert engine.decode_calls[-1] == [r.slot for r in requests]


def test_long_prompt_is_prefilled_in_chunks_while_others_keep_decoding(tokenizer):
    engine = FakeEngine(4096, max_slots=4)
    scheduler = make_scheduler(engine, prefill_chunk_tokens=16)
    a, _ = make_request(tokenizer)
    scheduler.submit(a)
    scheduler.step()
    b, _ = make_request(tokenizer, prompt_len=40)
    scheduler.submit(b)
    decodes_before = len(engine.decode_calls)
    for _ in range(3):
        scheduler.step()
    assert [n for slot, n in engine.prefill_calls if slot == b.slot] == [16, 16, 8]
    # a decoded in every one of those steps: the long prompt did not stall it
    assert len(engine.decode_calls) - decodes_before == 3
    assert all(a.slot in call for call in engine.decode_calls[decodes_before:])


# Row by row (no top-k), and batched sampling: all rows at once (top-k ≤ 256).
SAMPLING = [{}, {"top_k": 40, "top_p": 0.95, "repetition_penalty": 1.2}]


@pytest.mark.parametrize("sampling", SAMPLING, ids=["row-by-row", "batched"])
def test_text_with_a_seed_is_the_same_alone_and_beside_31_others(tokenizer, sampling):
    alone_engine = FakeEngine(4096, max_slots=1)
    alone = make_scheduler(alone_engine)
    request, deltas = make_request(tokenizer, seed=123, **sampling)
    alone.submit(request)
    run_until_done(alone)

    engine = FakeEngine(4096, max_slots=32)
    crowded = make_scheduler(engine, max_waiting=0)
    others = [make_request(tokenizer, seed=s, prompt_len=1 + s % 5, **sampling) for s in range(31)]
    target, target_deltas = make_request(tokenizer, seed=123, **sampling)
    for other, _ in others[:15]:
        crowded.submit(other)
    crowded.submit(target)
    for other, _ in others[15:]:
        crowded.submit(other)
    run_until_done(crowded)
    assert max(len(call) for call in engine.decode_calls) == 32
    assert text_of(target_deltas) == text_of(deltas)
    assert target_deltas[-1].finish_reason is FinishReason.LENGTH


def test_cancel_frees_the_slot_before_the_next_decode(tokenizer):
    engine = FakeEngine(4096, max_slots=2)
    scheduler = make_scheduler(engine)
    a, a_deltas = make_request(tokenizer)
    b, _ = make_request(tokenizer, seed=9)
    scheduler.submit(a)
    scheduler.submit(b)
    scheduler.step()
    scheduler.step()
    slot = a.slot
    scheduler.cancel(a)
    decodes = len(engine.decode_calls)
    scheduler.step()
    scheduler.step()
    assert all(slot not in call for call in engine.decode_calls[decodes:])
    assert engine.free_slots() == 1
    assert a_deltas[-1].finish_reason is FinishReason.CANCELLED
    assert scheduler.running == 1


def test_waiting_room_limit_refuses_with_a_retryable_error(tokenizer):
    engine = FakeEngine(4096, max_slots=1)
    scheduler = make_scheduler(engine, max_waiting=1)
    scheduler.submit(make_request(tokenizer)[0])  # takes the one slot at the next step
    scheduler.submit(make_request(tokenizer)[0])  # waits
    with pytest.raises(ServerAtCapacity) as info:
        scheduler.submit(make_request(tokenizer)[0])
    assert info.value.retryable and info.value.status_code == 429
    assert "server at capacity" in str(info.value) and "max_waiting=1" in str(info.value)


def test_deadline_ends_running_and_waiting_requests_with_timeout(tokenizer):
    clock = Clock()
    engine = FakeEngine(4096, max_slots=1)
    scheduler = make_scheduler(engine, clock=clock)
    running, running_deltas = make_request(tokenizer, deadline=5.0)
    waiting, waiting_deltas = make_request(tokenizer, deadline=5.0)
    scheduler.submit(running)
    scheduler.submit(waiting)
    scheduler.step()
    clock.now = 6.0
    scheduler.step()
    for deltas in (running_deltas, waiting_deltas):
        assert deltas[-1].finish_reason is FinishReason.TIMEOUT
        assert "deadline exceeded after 6.0 s" in (deltas[-1].error or "")
    assert engine.free_slots() == 1 and scheduler.running == scheduler.waiting == 0


def test_engine_failure_ends_running_streams_with_error_and_loop_survives(tokenizer):
    engine = FakeEngine(4096, max_slots=2, fail_on_decode=True)
    scheduler = make_scheduler(engine)
    request, deltas = make_request(tokenizer)
    done = threading.Event()
    request.sink = lambda d: (deltas.append(d), d.finish_reason and done.set())
    scheduler.submit(request)
    scheduler.start()
    try:
        assert done.wait(5)
        assert deltas[-1].finish_reason is FinishReason.ERROR
        assert "engine step failed: boom" in (deltas[-1].error or "")
        engine.fail_on_decode = False
        again, again_deltas = make_request(tokenizer, max_tokens=3)
        finished = threading.Event()
        again.sink = lambda d: (again_deltas.append(d), d.finish_reason and finished.set())
        scheduler.submit(again)
        assert finished.wait(5)
        assert again_deltas[-1].finish_reason is FinishReason.LENGTH
    finally:
        scheduler.stop()


def test_stop_cancels_everything_still_waiting(tokenizer):
    engine = FakeEngine(4096, max_slots=1)
    scheduler = make_scheduler(engine)
    first, first_deltas = make_request(tokenizer, max_tokens=10**5)
    second, second_deltas = make_request(tokenizer)
    scheduler.submit(first)
    scheduler.submit(second)
    scheduler.start()
    scheduler.stop()
    assert first_deltas[-1].finish_reason is FinishReason.CANCELLED
    assert second_deltas[-1].finish_reason is FinishReason.CANCELLED
