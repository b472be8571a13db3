"""What Redis mode stores: log entries, jobs and stream metadata survive the round trip."""

from __future__ import annotations

from mlserver_streaming.events import FinishReason
from mlserver_streaming.text.redis.codec import (
    Job,
    StreamMeta,
    entry_fields,
    entry_from_fields,
    event_id,
    event_index,
    model_keys,
)
from mlserver_streaming.text.sample.generation import Delta
from mlserver_streaming.text.sample.params import GenerationParams
from mlserver_streaming.text.streams.event_log import LogEntry


def as_redis_returns(fields: dict) -> dict:
    return {k.encode(): v.encode() for k, v in fields.items()}


def test_a_log_entry_comes_back_as_it_went_in_logprobs_and_final_parameters_included():
    delta = Delta("é, ", [5, 6], [-0.5, -1.25], [((5, -0.5), (7, -2.0)), ((6, -1.25),)])
    final = Delta("!", [9], finish_reason=FinishReason.TIMEOUT, error="late", retryable=True)
    for entry in (LogEntry(delta), LogEntry(final, {"prompt_tokens": 3, "seed": "42"})):
        assert entry_from_fields(as_redis_returns(entry_fields(entry))) == entry


def test_a_job_comes_back_with_typed_parameters():
    params = GenerationParams(max_tokens=9, temperature=0.5, seed=2**63 - 1, stop=("\n\n", "END"))
    job = Job("s-1", [1, 2, 3], params, 1_790_000_000.25)
    again = Job.from_fields(as_redis_returns(job.fields()))
    assert again == job and isinstance(again.params.stop, tuple)
    meta = StreamMeta.of(job)
    assert StreamMeta.decode(meta.encode()) == meta == StreamMeta(None, job.deadline, 3, 2**63 - 1)


def test_event_ids_are_one_based_stream_ids_and_keys_name_the_model_version():
    assert [event_id(i) for i in (0, 41)] == ["0-1", "0-42"]
    assert event_index(b"0-42") == 41 and event_index("0-1") == 0
    keys = model_keys("shakespeare", "v1")
    assert keys.jobs == "mlserver-streaming:{shakespeare@v1}:jobs"
    assert keys.events("a:1") == "mlserver-streaming:{shakespeare@v1}:events:a:1"
    assert model_keys("m", None).control == "mlserver-streaming:{m}:control"
