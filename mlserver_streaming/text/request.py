"""One V2 text request → (prompt ids, GenerationParams), with the model's limits and defaults.

Built once at load from the validated settings; every request is then parsed here, on the
runtime's side, before anything reaches the engine.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mlserver.types import InferenceRequest

from ..params import request_parameters
from .model_folder import ModelFolder
from .prompt import PromptLimits, decode_prompt, encode_prompt
from .sample.params import GenerationParams
from .settings import TextGenerationSettings
from .tokenizer import TextTokenizer

INLINE_PROMPT_CHARS = 16384
"""Prompts up to this long are tokenized on the event loop (well under a millisecond)."""


@dataclass(frozen=True)
class TextRequest:
    """What the engine is asked to do for one request."""

    prompt_ids: list[int]
    params: GenerationParams


@dataclass(frozen=True)
class RequestParser:
    """Prompt tokenization, parameter defaults and limits of one model."""

    tokenizer: TextTokenizer
    limits: PromptLimits
    defaults: Mapping[str, Any]
    """Typed default parameter values, checked at load."""
    max_tokens_cap: int

    @classmethod
    def from_settings(
        cls, settings: TextGenerationSettings, folder: ModelFolder, model_name: str
    ) -> RequestParser:
        """Validate the limits and defaults against the model (InvalidSettings at load)."""
        prepend = folder.adds_bos if settings.prepend_bos is None else settings.prepend_bos
        bos = folder.bos_token_id if prepend else None
        tokenizer = folder.tokenizer()
        limits = PromptLimits.from_settings(
            settings,
            model_name,
            folder.context_window,
            bos,
            folder.default_context,
            tokenizer.max_token_bytes,
        )
        defaults = settings.checked_defaults(model_name)
        return cls(tokenizer, limits, defaults, settings.max_tokens_cap)

    async def parse(self, payload: InferenceRequest) -> TextRequest:
        """A V2 request's prompt ids and parameters (InvalidInput / InvalidParameter)."""
        return await self.build_async(decode_prompt(payload), request_parameters(payload))

    async def build_async(self, prompt: str, raw: Mapping[str, Any]) -> TextRequest:
        """`build`, on a worker thread for a long prompt: tokenizing it must not hold up
        every other stream on the event loop (a short one is not worth the hop)."""
        if len(prompt) <= INLINE_PROMPT_CHARS:
            return self.build(prompt, raw)
        return await asyncio.to_thread(self.build, prompt, raw)

    def build(self, prompt: str, raw: Mapping[str, Any]) -> TextRequest:
        """Prompt ids and parameters from a prompt and raw parameter values (any front end:
        V2 here, other APIs by mapping their fields to these names first)."""
        params = GenerationParams.from_request(raw, self.defaults, self.max_tokens_cap)
        prompt_ids = encode_prompt(self.tokenizer, prompt, self.limits)
        params = self.limits.fit(params, len(prompt_ids), explicit="max_tokens" in raw)
        return TextRequest(prompt_ids, params)
