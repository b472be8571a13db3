"""Deltas → OpenAI objects: a stream of SSE chunks, or one unary response.

A renderer knows one endpoint's shape (completions or chat); `stream_events` and `unary`
drive either the same way. In a stream each choice's last chunk carries its finish_reason;
a generation that fails after the stream began ends it in-band, `data: {"error": ...}` then
`data: [DONE]`, since the HTTP status (200) is already sent.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any, Protocol

from ..sse import data_event
from ..text.record import RequestRecord
from ..text.sample.generation import Delta, merge
from . import chunks
from .chunks import Head, openai_finish_reason
from .errors import from_failed_delta
from .logprobs import TokenStrings, chat_logprobs, completion_logprobs, text_length
from .streaming import DONE, ChoiceStreams


class Renderer(Protocol):
    """One endpoint's objects for the deltas of its choices."""

    head: Head

    def opening(self, n: int) -> list[dict[str, Any]]:
        """Chunks sent before any token (chat: each choice's role)."""
        ...

    def chunk(self, index: int, delta: Delta) -> dict[str, Any]:
        """The stream chunk for one delta of choice `index`."""
        ...

    def choice(self, index: int, whole: Delta) -> dict[str, Any]:
        """A unary response's choice from its whole completion."""
        ...


class CompletionRenderer:
    """`text_completion` objects; logprobs as `{tokens, token_logprobs, top_logprobs,
    text_offset}` with offsets running on across a choice's chunks."""

    def __init__(self, head: Head, strings: TokenStrings, logprobs: int | None) -> None:
        self.head, self._strings, self._logprobs = head, strings, logprobs
        self._offsets: dict[int, int] = {}

    def opening(self, n: int) -> list[dict[str, Any]]:
        return []

    def chunk(self, index: int, delta: Delta) -> dict[str, Any]:
        return chunks.chunk(self.head, self.choice(index, delta))

    def choice(self, index: int, whole: Delta) -> dict[str, Any]:
        logprobs = None
        if self._logprobs is not None:
            offset = self._offsets.get(index, 0)
            logprobs = completion_logprobs(self._strings, whole, self._logprobs, offset)
            self._offsets[index] = offset + text_length(self._strings, whole)
        finish = openai_finish_reason(whole.finish_reason)
        return chunks.completion_choice(index, whole.text, logprobs, finish)


class ChatRenderer:
    """`chat.completion` objects; logprobs as `{"content": [...]}`."""

    def __init__(self, head: Head, strings: TokenStrings, logprobs: bool) -> None:
        self.head, self._strings, self._logprobs = head, strings, logprobs

    def opening(self, n: int) -> list[dict[str, Any]]:
        return [chunks.role_chunk(self.head, index) for index in range(n)]

    def _logprobs_of(self, delta: Delta) -> dict[str, Any] | None:
        return chat_logprobs(self._strings, delta) if self._logprobs else None

    def chunk(self, index: int, delta: Delta) -> dict[str, Any]:
        content = {"content": delta.text} if delta.text else {}
        finish = openai_finish_reason(delta.finish_reason)
        choice = chunks.chat_delta_choice(index, content, self._logprobs_of(delta), finish)
        return chunks.chunk(self.head, choice)

    def choice(self, index: int, whole: Delta) -> dict[str, Any]:
        finish = openai_finish_reason(whole.finish_reason)
        return chunks.chat_message_choice(index, whole.text, self._logprobs_of(whole), finish)


def usage_of(records: Sequence[RequestRecord]) -> dict[str, int]:
    """The prompt once (every choice shares it), the completions of all choices summed."""
    completion = sum(record.completion_tokens for record in records)
    return chunks.usage(records[0].prompt_tokens, completion)


async def stream_events(
    renderer: Renderer,
    records: Sequence[RequestRecord],
    streams: ChoiceStreams,
    include_usage: bool,
) -> AsyncIterator[bytes]:
    """The SSE body: chunks as deltas arrive, then the usage chunk (when asked for) and
    `[DONE]`. Leaving early cancels every choice."""
    try:
        for opening in renderer.opening(len(records)):
            yield data_event(opening)
        remaining = len(records)
        while remaining:
            index, delta = await streams.next()
            failure = from_failed_delta(delta)
            if failure is not None:
                yield data_event(failure.body())
                yield DONE
                return
            yield data_event(renderer.chunk(index, delta))
            remaining -= delta.finish_reason is not None
        if include_usage:
            yield data_event(chunks.usage_chunk(renderer.head, usage_of(records)))
        yield DONE
    finally:
        streams.close()


async def unary(
    renderer: Renderer, records: Sequence[RequestRecord], streams: ChoiceStreams
) -> dict[str, Any]:
    """The whole response once every choice finished; an OpenAIError if one failed."""
    try:
        wholes = [merge(deltas) for deltas in await streams.collect()]
    finally:
        streams.close()
    for whole in wholes:
        failure = from_failed_delta(whole)
        if failure is not None:
            raise failure
    choices = [renderer.choice(index, whole) for index, whole in enumerate(wholes)]
    return chunks.response(renderer.head, choices, usage_of(records))
