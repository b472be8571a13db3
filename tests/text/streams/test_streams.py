"""Resumable streams in-process (engine on a thread): event_index, resume, background, cancel."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from mlserver.types import InferenceRequest, InferenceResponse

from mlserver_streaming.errors import InvalidParameter, StreamNotFound
from mlserver_streaming.events import ERROR, EVENT_INDEX, FINISH_REASON, REQUEST_INDEX
from mlserver_streaming.text.runtime import TextGenerator
from mlserver_streaming.text.streams.streams import stream_key
from tests.text.test_runtime import params_of, settings, text_of

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
async def model() -> AsyncIterator[TextGenerator]:
    runtime = TextGenerator(settings("resumable", resume_retention_s=60))
    assert await runtime.load()
    yield runtime
    await runtime.unload()


def request(stream_id: str | None = None, prompt: str = "ROMEO:", **params) -> InferenceRequest:
    tensor = {"name": "prompt", "datatype": "BYTES", "shape": [1], "data": [prompt]}
    return InferenceRequest(id=stream_id, inputs=[tensor], parameters=params or None)


def events_of(
    model: TextGenerator, *requests: InferenceRequest
) -> AsyncIterator[InferenceResponse]:
    async def payloads() -> AsyncIterator[InferenceRequest]:
        for item in requests:
            yield item

    return model.predict_stream(payloads())


async def collect(model: TextGenerator, *requests: InferenceRequest) -> list[InferenceResponse]:
    return [event async for event in events_of(model, *requests)]


def view(events: list[InferenceResponse]) -> list[tuple[int, str, dict]]:
    """(event_index, text, parameters without request_index) of each event."""
    out = []
    for event in events:
        params = {k: v for k, v in params_of(event).items() if k != REQUEST_INDEX}
        out.append((params[EVENT_INDEX], text_of(event), params))
    return out


async def first_events(stream: AsyncIterator[InferenceResponse], k: int) -> list:
    got = []
    async for event in stream:
        got.append(event)
        if len(got) == k:
            break
    await stream.aclose()  # type: ignore[attr-defined]  # the client drops the connection
    return got


async def test_every_event_has_an_index_without_gaps_and_each_turn_its_own_log(model):
    # MLServer gives every request of a gRPC call the first one's id.
    turns = request("t1", max_tokens=5, seed=1), request("t1", max_tokens=3)
    events = await collect(model, *turns)
    indexes = [(params_of(e)[REQUEST_INDEX], params_of(e)[EVENT_INDEX]) for e in events]
    turn0 = [i for r, i in indexes if r == 0]
    turn1 = [i for r, i in indexes if r == 1]
    assert turn0 == list(range(len(turn0))) and turn1 == list(range(len(turn1)))
    assert stream_key("t1", {REQUEST_INDEX: 1}) == "t1:1"
    replay = await collect(model, request(resume="t1:1"))
    assert view(replay) == view([e for e in events if params_of(e)[REQUEST_INDEX] == 1])


async def test_a_background_stream_resumes_after_a_disconnect_with_the_same_events(model):
    body = {"max_tokens": 12, "seed": 7, "temperature": 0.9}
    whole = await collect(model, request("whole", **body))
    head = await first_events(events_of(model, request("bg", background=True, **body)), 3)
    tail = await collect(model, request(resume="bg", starting_after=2))
    joined = view(head + tail)
    # Exactly the stream's log, event by event: no duplicate, no gap, the same final event.
    assert joined == view(await collect(model, request(resume="bg")))
    assert [i for i, _, _ in joined] == list(range(len(joined)))
    # The same events as an undisturbed run: one event per engine delta.
    assert joined == view(whole)
    unary = await model.predict(request(resume="bg", starting_after=0))
    assert text_of(unary) == "".join(t for _, t, _ in joined[1:])
    assert params_of(unary)[EVENT_INDEX] == joined[-1][0]


async def test_without_background_a_disconnect_cancels_and_the_log_says_so(model):
    head = await first_events(events_of(model, request("fg", max_tokens=200, seed=1)), 2)
    rest = await asyncio.wait_for(collect(model, request(resume="fg", starting_after=1)), 10)
    assert [params_of(e)[EVENT_INDEX] for e in head + rest] == list(range(len(head + rest)))
    assert params_of(rest[-1])[FINISH_REASON] == "cancelled"


async def test_cancel_ends_a_background_stream_and_returns_its_events(model):
    await first_events(events_of(model, request("c", max_tokens=200, seed=2, background=True)), 1)
    cancelled = await asyncio.wait_for(collect(model, request(cancel="c")), 10)
    assert params_of(cancelled[-1])[FINISH_REASON] == "cancelled"
    assert params_of(cancelled[0])[EVENT_INDEX] == 0


async def test_an_unknown_stream_is_an_error_event_in_a_stream_and_not_found_unary(model):
    (event,) = await collect(model, request(resume="nope"))
    assert params_of(event)[FINISH_REASON] == "error" and params_of(event)[EVENT_INDEX] == 0
    assert "stream 'nope' not found" in params_of(event)[ERROR]
    with pytest.raises(StreamNotFound, match="stream 'nope' not found"):
        await model.predict(request(resume="nope"))


async def test_background_is_refused_on_unary_predict(model):
    with pytest.raises(InvalidParameter, match="background applies to streamed requests only."):
        await model.predict(request(background=True))


async def test_an_error_found_while_resuming_is_the_readers_next_event(model):
    # A live stream read from past where it will end: that shows only once it ends, after
    # the reader's stream began; the error is still an event, numbered as the next one.
    starting = first_events(
        events_of(model, request("past-end", max_tokens=200, background=True)), 1
    )
    await starting
    events = await collect(model, request(resume="past-end", starting_after=1000))
    params = params_of(events[-1])
    assert len(events) == 1 and params[FINISH_REASON] == "error"
    assert params[EVENT_INDEX] == (await model.streams.find("past-end")).length
