"""The word-streaming example model from MLServer's streaming docs, with the stream contract.

It splits the prompt on spaces and streams it back word by word after a delay. The last
word's event carries `final: true`, so the docs' clients, which print every event's first
output, work unchanged.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from mlserver import MLModel
from mlserver.types import InferenceRequest, InferenceResponse, ResponseOutput
from pydantic import Field

from .errors import InvalidInput
from .events import FinishReason, ParamValue, event, final_event, stream_requests
from .inputs import INPUT_PROMPT, single_string
from .params import reject_unknown, request_parameters
from .serving import check_streaming_server
from .settings import RuntimeSettings, parse_extra
from .tensors import encode_text

OUTPUT_TEXT = "output"


class WordStreamSettings(RuntimeSettings):
    """`parameters.extra` of the word-streaming model."""

    delay_seconds: float = Field(0.5, ge=0, le=60)
    """Pause before each word, to simulate a slow model (seconds, 0–60)."""

    max_words: int = Field(1000, ge=1, le=1_000_000)
    """Most words one prompt may hold (1–1,000,000); longer prompts are refused before
    their stream starts (1,000 words at 0.5 s each stream for about 8 minutes)."""


def split_words(text: str) -> list[str]:
    """Words with their leading space kept, so joining the pieces gives the text back."""
    words = text.split(" ")
    return [word if i == 0 else " " + word for i, word in enumerate(words)]


def decode_prompt(request: InferenceRequest, max_words: int) -> str:
    """The single prompt string of a request, of at most `max_words` words; no parameters."""
    reject_unknown(request_parameters(request), allowed=())
    text = single_string(request, INPUT_PROMPT)
    words = len(split_words(text))
    if words > max_words:
        raise InvalidInput(
            f"input {INPUT_PROMPT!r} must hold at most {max_words} words (max_words), got {words}."
        )
    return text


def text_output(text: str) -> ResponseOutput:
    """The `output` tensor holding one piece of text."""
    return encode_text(OUTPUT_TEXT, text)


class WordStreamModel(MLModel):
    """Streams the prompt back word by word: the hello-world of MLServer streaming."""

    async def load(self) -> bool:
        check_streaming_server(self, streaming_only=True)
        self._extra = parse_extra(self.settings, WordStreamSettings)
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        text = decode_prompt(payload, self._extra.max_words)
        return final_event(
            self, FinishReason.STOP, [text_output(text)], words=len(split_words(text))
        )

    def predict_stream(
        self, payloads: AsyncIterator[InferenceRequest]
    ) -> AsyncIterator[InferenceResponse]:
        return stream_requests(self, payloads, self._stream_one, [text_output("")])

    async def _stream_one(
        self, payload: InferenceRequest, tags: dict[str, ParamValue]
    ) -> AsyncIterator[InferenceResponse]:
        words = split_words(decode_prompt(payload, self._extra.max_words))
        for i, word in enumerate(words):
            await asyncio.sleep(self._extra.delay_seconds)
            if i == len(words) - 1:
                yield final_event(self, FinishReason.STOP, [text_output(word)], **tags)
            else:
                yield event(self, [text_output(word)], **tags)
