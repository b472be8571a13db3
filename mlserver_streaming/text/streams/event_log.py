"""Streams as logs: every event of a text stream, kept by index so a client can resume.

A producer (the task generating one stream) appends entries; any number of readers replay
from an index and then tail the live entries until the final one. `EventLog` is what the
readers see: `MemoryEventLog` keeps the logs in this process (the default);
`redis/log.RedisEventLog` keeps a Redis Stream per stream id, written by the workers, for
front ends on several machines.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from ...errors import InvalidParameter, StreamNotFound
from ...events import ParamValue
from ..sample.generation import Delta


@dataclass(frozen=True)
class LogEntry:
    """What rebuilds one event exactly: its delta, plus the final event's own parameters
    (usage, seed, error) on the last entry."""

    delta: Delta
    final_params: Mapping[str, ParamValue] = field(default_factory=dict)

    @property
    def final(self) -> bool:
        """True for the last entry of a stream."""
        return self.delta.finish_reason is not None


class StreamLog(Protocol):
    """The log of one stream as its readers see it."""

    @property
    def stream_id(self) -> str: ...

    @property
    def logprobs(self) -> int | None:
        """The request's `logprobs`, which shapes every event's outputs."""
        ...

    @property
    def ended(self) -> bool: ...

    @property
    def length(self) -> int:
        """Entries appended so far (the next event_index)."""
        ...

    def entries(self, after: int) -> AsyncIterator[tuple[int, LogEntry]]:
        """(event_index, entry) for every entry after `after`, live ones as they come, up to
        the final one (StreamNotFound when entries after `after` are no longer kept)."""
        ...


class EventLog(Protocol):
    """Stream logs by stream id."""

    async def get(self, stream_id: str) -> StreamLog:
        """The log of a stream that is live or ended within retention (else StreamNotFound)."""
        ...


def check_starting_after(stream: StreamLog, after: int) -> None:
    """InvalidParameter unless events after `after` exist or may still come."""
    last = stream.length - 1
    if after < -1 or (stream.ended and after >= last):
        allowed = f"[-1, {last - 1}]" if stream.ended else ">= -1"
        raise InvalidParameter(
            f"starting_after must be in {allowed} for stream {stream.stream_id!r}"
            f"{f' (its final event is {last})' if stream.ended else ''}, got {after}."
        )


class MemoryStream:
    """One stream's entries in memory; readers wait on an event swapped at each append."""

    def __init__(self, stream_id: str, logprobs: int | None, max_events: int) -> None:
        self.stream_id = stream_id
        self.logprobs = logprobs
        self.max_events = max_events
        self.on_end: Callable[[MemoryStream], None] = lambda stream: None
        self._entries: list[LogEntry] = []
        self._first = 0
        """The event_index of `_entries[0]`: older entries were trimmed (max_events)."""
        self._changed = asyncio.Event()

    @property
    def ended(self) -> bool:
        """True once the final entry is in."""
        return bool(self._entries) and self._entries[-1].final

    @property
    def length(self) -> int:
        """Entries appended so far, trimmed ones included (the next event_index)."""
        return self._first + len(self._entries)

    def append(self, entry: LogEntry) -> int:
        """Add the next entry and wake every waiting reader; returns its event_index."""
        if self.ended:
            raise RuntimeError(f"stream {self.stream_id!r} already ended")
        self._entries.append(entry)
        if len(self._entries) > self.max_events:
            del self._entries[0]
            self._first += 1
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
        if entry.final:
            self.on_end(self)
        return self.length - 1

    def entries(self, after: int) -> AsyncIterator[tuple[int, LogEntry]]:
        """Replay after `after`, then tail (InvalidParameter at once for a bad index)."""
        check_starting_after(self, after)  # at once: a bad index fails before anything is sent
        return self._tail(after)

    async def _tail(self, after: int) -> AsyncIterator[tuple[int, LogEntry]]:
        index = after + 1
        while True:
            if index < self._first:
                raise StreamNotFound(
                    f"events before {self._first} of stream {self.stream_id!r} are no longer "
                    f"kept (resume_max_events={self.max_events}); got starting_after={after}."
                )
            if index < self.length:
                entry = self._entries[index - self._first]
                yield index, entry
                if entry.final:
                    return
                index += 1
            elif self.ended:  # it ended before reaching `after`
                check_starting_after(self, after)
            else:
                await self._changed.wait()


class MemoryEventLog:
    """The logs of this process's streams, with bounded retention: an ended stream is kept
    `retention_s` seconds and, past `max_streams` ended streams, the oldest goes first."""

    def __init__(
        self,
        retention_s: float,
        max_streams: int,
        max_events: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.retention_s = retention_s
        self.max_streams = max_streams
        self.max_events = max_events
        self._clock = clock
        self._streams: dict[str, MemoryStream] = {}
        self._ended: OrderedDict[str, float] = OrderedDict()
        """Ended streams' ids by end time, oldest first."""

    def open(self, stream_id: str, logprobs: int | None) -> MemoryStream:
        """Start the log of a new stream (InvalidParameter while one of that id is live; an
        ended one of that id is replaced)."""
        self.expire()
        live = self._streams.get(stream_id)
        if live is not None and not live.ended:
            raise InvalidParameter(
                f"stream id {stream_id!r} is already live: resume it (resume: {stream_id!r}) "
                "or send the new request with another id."
            )
        self._ended.pop(stream_id, None)
        stream = MemoryStream(stream_id, logprobs, self.max_events)
        stream.on_end = self._ending
        self._streams[stream_id] = stream
        return stream

    async def get(self, stream_id: str) -> MemoryStream:
        self.expire()
        stream = self._streams.get(stream_id)
        if stream is None:
            raise StreamNotFound(
                f"stream {stream_id!r} not found: no such stream id, or it ended more than "
                f"{self.retention_s:g} s ago (resume_retention_s)."
            )
        return stream

    def expire(self) -> None:
        """Drop the ended streams past their retention, then the oldest past max_streams."""
        horizon = self._clock() - self.retention_s
        while self._ended:
            stream_id, ended_at = next(iter(self._ended.items()))
            if ended_at > horizon and len(self._ended) <= self.max_streams:
                return
            del self._ended[stream_id]
            del self._streams[stream_id]

    def __len__(self) -> int:
        """Streams retained, live and ended."""
        return len(self._streams)

    def _ending(self, stream: MemoryStream) -> None:
        if self._streams.get(stream.stream_id) is stream:
            self._ended[stream.stream_id] = self._clock()
            self.expire()
