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

from .events import REQUEST_INDEX, each_request, ending_with_error_event, event, final_event
from .inputs import single_string
from .params import reject_unknown, request_parameters
from .settings import RuntimeSettings, parse_extra
from .tensors import encode_text

INPUT_PROMPT = "prompt"
OUTPUT_TEXT = "output"
FINISH_STOP = "stop"


class WordStreamSettings(RuntimeSettings):
    """`parameters.extra` of the word-streaming model."""

    delay_seconds: float = Field(0.5, ge=0, le=60)
    """Pause before each word, to simulate a slow model (seconds, 0–60)."""


def split_words(text: str) -> list[str]:
    """Words with their leading space kept, so joining the pieces gives the text back."""
    words = text.split(" ")
    return [word if i == 0 else " " + word for i, word in enumerate(words)]


def decode_prompt(request: InferenceRequest) -> str:
    """The single prompt string of a request; no parameters are accepted."""
    reject_unknown(request_parameters(request), allowed=())
    return single_string(request, INPUT_PROMPT)


def text_output(text: str) -> ResponseOutput:
    """The `output` tensor holding one piece of text."""
    return encode_text(OUTPUT_TEXT, text)


class WordStreamModel(MLModel):
    """Streams the prompt back word by word: the hello-world of MLServer streaming."""

    async def load(self) -> bool:
        self._config = parse_extra(self.settings, WordStreamSettings)
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        text = decode_prompt(payload)
        return final_event(self, FINISH_STOP, [text_output(text)], words=len(split_words(text)))

    def predict_stream(
        self, payloads: AsyncIterator[InferenceRequest]
    ) -> AsyncIterator[InferenceResponse]:
        return each_request(payloads, self._stream_request)

    def _stream_request(
        self, payload: InferenceRequest, index: int
    ) -> AsyncIterator[InferenceResponse]:
        events = self._stream_one(payload, index)
        return ending_with_error_event(self, events, [text_output("")], **{REQUEST_INDEX: index})

    async def _stream_one(
        self, payload: InferenceRequest, index: int
    ) -> AsyncIterator[InferenceResponse]:
        words = split_words(decode_prompt(payload))
        for i, word in enumerate(words):
            await asyncio.sleep(self._config.delay_seconds)
            if i == len(words) - 1:
                yield final_event(self, FINISH_STOP, [text_output(word)], **{REQUEST_INDEX: index})
            else:
                yield event(self, [text_output(word)], **{REQUEST_INDEX: index})
