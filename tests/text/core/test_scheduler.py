"""Continuous batching, admission control, cancellation and deadlines, with a fake engine."""

from __future__ import annotations

from pathlib import Path

import pytest
from tokenizers import Tokenizer

from mlserver_streaming.events import FinishReason
from mlserver_streaming.text.core.scheduler import Scheduler, SequenceRequest
from mlserver_streaming.text.core.step_output import StepOutput
from mlserver_streaming.text.sample.generation import Delta, Generation
from mlserver_streaming.text.sample.params import GenerationParams
from tests.fakes import CachingFakeEngine, FakeEngine

TOKENIZER = Path(__file__).parents[3] / "model-repo" / "shakespeare" / "tokenizer.json"


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return Tokenizer.from_file(str(TOKENIZER))


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


_ids = iter(range(10**6))
DELTAS: dict[int, list[Delta]] = {}
"""Every request's deltas, by request id, as the steps returned them."""


def make_request(
    tokenizer, prompt_len=3, deadline=100.0, **params
) -> tuple[SequenceRequest, list[Delta]]:
    params = {"max_tokens": 20, "temperature": 0.8, "seed": 7, **params}
    generation = Generation(list(range(10, 10 + prompt_len)), GenerationParams(**params), tokenizer)
    rid = next(_ids)
    DELTAS[rid] = deltas = []
    return SequenceRequest(rid, generation, deadline=deadline, arrival=0.0), deltas


def collect(out: StepOutput) -> StepOutput:
    """File a step output's deltas under their requests."""
    for rid, delta in out.deltas.items():
        DELTAS[rid].append(delta)
    return out


class Stepper:
    """Calls `step` and files what it returns (the between turns' parts included)."""

    def __init__(self, scheduler: Scheduler, between=None) -> None:
        self.scheduler = scheduler
        self.between = between

    def __call__(self) -> StepOutput:
        def between(part: StepOutput) -> None:
            collect(part)
            if self.between is not None:
                self.between(part)

        return collect(self.scheduler.step(between))


def step(scheduler: Scheduler, between=None) -> StepOutput:
    return Stepper(scheduler, between)()


def make_scheduler(engine, clock=None, **kw) -> Scheduler:
    kw = {"max_running": engine.max_slots, "prefill_chunk_tokens": 64, **kw}
    return Scheduler(engine, clock=clock or Clock(), **kw)


def run_until_done(scheduler: Scheduler, limit: int = 500) -> None:
    step = Stepper(scheduler)
    for _ in range(limit):
        if not (scheduler.running or scheduler.waiting):
            return
        step()
    raise AssertionError("scheduler did not drain")


def text_of(deltas: list[Delta]) -> tuple[str, list[int]]:
    return "".join(d.text for d in deltas), [t for d in deltas for t in d.token_ids]


def test_new_request_joins_the_running_batch_at_the_next_step(tokenizer):
    engine = FakeEngine(4096, max_slots=4)
    scheduler = make_scheduler(engine)
    a, _ = make_request(tokenizer)
    scheduler.submit(a)
    for _ in range(3):
        step(scheduler)
    b, _ = make_request(tokenizer, seed=8)
    scheduler.submit(b)
    step(scheduler)  # b prefills, samples its first token, then decodes beside a
    assert engine.prefill_batches[-1] == [b.slot]
    assert engine.decode_calls[-1] == [a.slot, b.slot]
    assert b.generation.completion_tokens == 2
    step(scheduler)
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
    step(scheduler)
    parts: list[StepOutput] = []

    def arrive(part: StepOutput) -> None:  # the engine process reads its pipe here
        if not parts:
            scheduler.submit(b)
        parts.append(part)

    step(scheduler, arrive)  # a decodes; b arrives after its first layer
    assert engine.decode_calls[-1] == [a.slot]
    assert engine.prefill_batches[-1] == [b.slot]
    # Only the decode calls `between` here (no first tokens before it): b's first token was
    # handed out from inside that decode, in the turn right after its prefill.
    assert [b.request_id in part.deltas for part in parts] == [False, True]
    assert b.generation.completion_tokens == 1
    assert [len(d.token_ids) for d in b_deltas] == [1]
    step(scheduler)
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
    step(scheduler)  # 20 tokens of budget: two whole prompts and 4 tokens of the third
    assert engine.prefill_batches == [[r.slot for r in requests]]
    assert [n for _, n in engine.prefill_calls] == [8, 8, 4]
    assert engine.decode_calls == [[requests[0].slot, requests[1].slot]]
    step(scheduler)
    assert engine.prefill_calls[-1] == (requests[2].slot, 4)
    assert engine.decode_calls[-1] == [r.slot for r in requests]


def test_long_prompt_is_prefilled_in_chunks_while_others_keep_decoding(tokenizer):
    engine = FakeEngine(4096, max_slots=4)
    scheduler = make_scheduler(engine, prefill_chunk_tokens=16)
    a, _ = make_request(tokenizer)
    scheduler.submit(a)
    step(scheduler)
    b, _ = make_request(tokenizer, prompt_len=40)
    scheduler.submit(b)
    decodes_before = len(engine.decode_calls)
    for _ in range(3):
        step(scheduler)
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
    crowded = make_scheduler(engine)
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
    step(scheduler)
    step(scheduler)
    slot = a.slot
    scheduler.cancel(a.request_id)
    decodes = len(engine.decode_calls)
    step(scheduler)
    step(scheduler)
    assert all(slot not in call for call in engine.decode_calls[decodes:])
    assert engine.free_slots() == 1
    assert a_deltas[-1].finish_reason is FinishReason.CANCELLED
    assert scheduler.running == 1


def test_deadline_ends_running_and_waiting_requests_with_timeout(tokenizer):
    clock = Clock()
    engine = FakeEngine(4096, max_slots=1)
    scheduler = make_scheduler(engine, clock=clock)
    running, running_deltas = make_request(tokenizer, deadline=5.0)
    waiting, waiting_deltas = make_request(tokenizer, deadline=5.0)
    scheduler.submit(running)
    scheduler.submit(waiting)
    step(scheduler)
    clock.now = 6.0
    step(scheduler)
    for deltas in (running_deltas, waiting_deltas):
        assert deltas[-1].finish_reason is FinishReason.TIMEOUT
        assert "deadline exceeded after 6.0 s" in (deltas[-1].error or "")
    assert engine.free_slots() == 1 and scheduler.running == scheduler.waiting == 0


def test_step_output_counts_prefilled_tokens_admissions_and_sequences(tokenizer):
    clock = Clock()
    engine = FakeEngine(4096, max_slots=2)
    scheduler = make_scheduler(engine, clock=clock, prefill_chunk_tokens=10)
    requests = [make_request(tokenizer, prompt_len=6)[0] for _ in range(3)]
    for request in requests:
        scheduler.submit(request)
    clock.now = 0.25
    parts: list[StepOutput] = []
    out = step(scheduler, parts.append)
    # Two slots: two admitted (each waited 0.25 s), 10 of their 12 prompt tokens prefilled.
    assert out.step_done and not any(p.step_done for p in parts)
    admitted = {k: v for p in [*parts, out] for k, v in p.admitted.items()}
    assert admitted == {requests[0].request_id: 0.25, requests[1].request_id: 0.25}
    assert sum(p.prompt_tokens for p in [*parts, out]) == 10
    assert (out.running, out.waiting) == (2, 1)
    parts = []
    out = step(scheduler, parts.append)
    assert sum(p.prompt_tokens for p in [*parts, out]) == 2
    assert not any(p.admitted for p in [*parts, out])


def test_a_cached_prefix_is_not_prefilled_again_and_the_text_is_the_same(tokenizer):
    runs = {}
    for engine in (FakeEngine(4096, max_slots=2), CachingFakeEngine(4096, max_slots=2)):
        scheduler = make_scheduler(engine)
        first, first_deltas = make_request(tokenizer, prompt_len=6, max_tokens=5)
        scheduler.submit(first)
        run_until_done(scheduler)
        again, again_deltas = make_request(tokenizer, prompt_len=6, max_tokens=5)
        longer, longer_deltas = make_request(tokenizer, prompt_len=9, max_tokens=5)
        scheduler.submit(again)
        scheduler.submit(longer)
        parts: list[StepOutput] = []
        parts.append(step(scheduler, parts.append))
        decoded = sorted(engine.decode_calls[-1]) == sorted([again.slot, longer.slot])
        run_until_done(scheduler)
        runs[type(engine)] = [text_of(d) for d in (first_deltas, again_deltas, longer_deltas)]
        prefilled = [n for _, n in engine.prefill_calls[1:]], sum(p.prompt_tokens for p in parts)
    # With the cache `again` holds all but its last token (whose logits are needed): that
    # token joins the decode, beside `longer` (the same 6 tokens, then 3 more), which goes
    # whole into the other slot in a prefill of its own.
    assert runs[FakeEngine] == runs[CachingFakeEngine]
    assert prefilled == ([9], 10)
    assert decoded  # both in the step's one decode


def test_a_replayed_generation_reuses_the_cache_of_its_prompt_and_tokens(tokenizer):
    engine = CachingFakeEngine(4096, max_slots=1)
    scheduler = make_scheduler(engine)
    first, first_deltas = make_request(tokenizer, max_tokens=8)
    scheduler.submit(first)
    run_until_done(scheduler)
    _, sent = text_of(first_deltas)
    resumed, resumed_deltas = make_request(tokenizer, max_tokens=8)
    resumed.generation.replay(sent[:5])
    prefills = len(engine.prefill_calls)
    scheduler.submit(resumed)
    run_until_done(scheduler)
    # The prompt and 4 replayed tokens were cached: the 5th goes in as a decode, no prefill.
    assert len(engine.prefill_calls) == prefills
    assert text_of(resumed_deltas)[1] == sent[5:]


def test_end_ends_running_and_waiting_requests(tokenizer):
    engine = FakeEngine(4096, max_slots=1)
    scheduler = make_scheduler(engine)
    first, first_deltas = make_request(tokenizer, max_tokens=10**5)
    second, second_deltas = make_request(tokenizer)
    scheduler.submit(first)
    scheduler.submit(second)
    step(scheduler)
    out = collect(scheduler.end(FinishReason.CANCELLED, "shutting down"))
    assert set(out.deltas) == {first.request_id, second.request_id}
    assert first_deltas[-1].finish_reason is FinishReason.CANCELLED
    assert second_deltas[-1].finish_reason is FinishReason.CANCELLED
    assert engine.free_slots() == 1 and (out.running, out.waiting) == (0, 0)
