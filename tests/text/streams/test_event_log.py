"""The in-memory event log: replay then tail, retention with an injected clock, bounds."""

from __future__ import annotations

import asyncio

import pytest

from mlserver_streaming.errors import InvalidParameter, StreamNotFound
from mlserver_streaming.events import FinishReason
from mlserver_streaming.text.sample.generation import Delta
from mlserver_streaming.text.streams.event_log import LogEntry, MemoryEventLog, MemoryStream

pytestmark = pytest.mark.timeout(10)


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def chunk(text: str) -> LogEntry:
    return LogEntry(Delta(text=text, token_ids=[len(text)]))


def final(text: str = "") -> LogEntry:
    return LogEntry(Delta(text=text, finish_reason=FinishReason.LENGTH), {"completion_tokens": 3})


def make_log(clock: Clock | None = None, **bounds) -> MemoryEventLog:
    settings = {"retention_s": 300.0, "max_streams": 8, "max_events": 100, **bounds}
    return MemoryEventLog(**settings, clock=clock or Clock())


async def read_all(stream: MemoryStream, after: int = -1) -> list[tuple[int, str]]:
    return [(index, entry.delta.text) async for index, entry in stream.entries(after)]


async def test_append_numbers_entries_from_zero_and_replay_starts_after_an_index():
    stream = make_log().open("s", None)
    assert [stream.append(chunk(t)) for t in "abc"] == [0, 1, 2]
    assert stream.append(final("d")) == 3
    assert stream.ended and stream.length == 4
    assert await read_all(stream) == [(0, "a"), (1, "b"), (2, "c"), (3, "d")]
    assert await read_all(stream, 1) == [(2, "c"), (3, "d")]


async def test_a_reader_replays_then_tails_live_entries_until_the_final_one():
    stream = make_log().open("s", None)
    stream.append(chunk("a"))
    reader = asyncio.create_task(read_all(stream, -1))
    for text in "bc":
        await asyncio.sleep(0.01)
        assert not reader.done()
        stream.append(chunk(text))
    stream.append(final("!"))
    assert await asyncio.wait_for(reader, 10) == [(0, "a"), (1, "b"), (2, "c"), (3, "!")]


async def test_several_readers_see_the_same_entries():
    stream = make_log().open("s", None)
    readers = [asyncio.create_task(read_all(stream, after)) for after in (-1, 0)]
    await asyncio.sleep(0)
    stream.append(chunk("a"))
    stream.append(chunk("b"))
    stream.append(final())
    first, second = await asyncio.gather(*readers)
    assert first == [(0, "a"), (1, "b"), (2, "")] and second == first[1:]


async def test_starting_after_out_of_range_is_refused_at_once():
    stream = make_log().open("s", None)
    with pytest.raises(InvalidParameter, match=r"starting_after must be in >= -1 .*got -2\."):
        stream.entries(-2)
    stream.append(chunk("a"))
    stream.append(final())
    with pytest.raises(InvalidParameter, match=r"must be in \[-1, 0\] .*final event is 1\), got 1"):
        stream.entries(1)


async def test_a_live_stream_ending_before_starting_after_fails_its_reader():
    stream = make_log().open("s", None)
    reader = asyncio.create_task(read_all(stream, 5))
    await asyncio.sleep(0)
    stream.append(chunk("a"))
    stream.append(final())
    with pytest.raises(InvalidParameter, match=r"in \[-1, 0\] .*final event is 1\), got 5"):
        await asyncio.wait_for(reader, 10)


async def test_an_unknown_id_is_not_found_with_a_clear_message():
    with pytest.raises(StreamNotFound, match=r"stream 'nope' not found: .*300 s ago") as info:
        await make_log().get("nope")
    assert info.value.status_code == 404


async def test_an_ended_stream_is_kept_for_the_retention_then_expires():
    clock = Clock()
    log = make_log(clock, retention_s=60.0)
    stream = log.open("s", 2)
    stream.append(chunk("a"))
    clock.now += 1000  # a live stream never expires
    assert (await log.get("s")) is stream
    stream.append(final())
    clock.now += 59
    assert (await log.get("s")).logprobs == 2
    assert await read_all(await log.get("s"), 0) == [(1, "")]
    clock.now += 2
    with pytest.raises(StreamNotFound):
        await log.get("s")
    assert len(log) == 0


async def test_past_max_streams_the_oldest_ended_stream_goes_first():
    log = make_log(max_streams=2)
    live = log.open("live", None)
    for name in ("a", "b", "c"):
        log.open(name, None).append(final())
    with pytest.raises(StreamNotFound):
        await log.get("a")
    assert await log.get("b") and await log.get("c") and (await log.get("live")) is live
    assert len(log) == 3


async def test_past_max_events_old_entries_are_trimmed_and_cannot_be_resumed():
    stream = make_log(max_events=2).open("s", None)
    for text in "abcd":
        stream.append(chunk(text))
    stream.append(final("e"))
    assert await read_all(stream, 2) == [(3, "d"), (4, "e")]
    with pytest.raises(StreamNotFound, match=r"events before 3 of stream 's' are no longer kept"):
        await read_all(stream, 0)


async def test_a_new_stream_with_the_same_id_replaces_the_old_one_for_new_readers():
    log = make_log()
    old = log.open("s", None)
    old.append(final("old"))
    new = log.open("s", None)
    assert (await log.get("s")) is new and not new.ended
    with pytest.raises(RuntimeError, match="already ended"):
        old.append(chunk("x"))


async def test_a_live_stream_id_cannot_be_opened_again():
    log = make_log()
    live = log.open("s", None)
    live.append(chunk("a"))
    with pytest.raises(InvalidParameter, match=r"stream id 's' is already live: resume it"):
        log.open("s", None)
    assert (await log.get("s")) is live
