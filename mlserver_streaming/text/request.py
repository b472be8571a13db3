"""One V2 text request → (prompt ids, GenerationParams), with the model's limits and defaults.

Built once at load from the validated settings; every request is then parsed here, on the
runtime's side, before anything reaches the engine.
"""

from __future__ import annotations

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
        limits = PromptLimits.from_settings(
            settings, model_name, folder.context_window, bos, folder.default_context
        )
        defaults = settings.checked_defaults(model_name)
        return cls(folder.tokenizer(), limits, defaults, settings.max_tokens_cap)

    def parse(self, payload: InferenceRequest) -> TextRequest:
        """A V2 request's prompt ids and parameters (InvalidInput / InvalidParameter)."""
        return self.build(decode_prompt(payload), request_parameters(payload))

    def build(self, prompt: str, raw: Mapping[str, Any]) -> TextRequest:
        """Prompt ids and parameters from a prompt and raw parameter values (any front end:
        V2 here, other APIs by mapping their fields to these names first)."""
        params = GenerationParams.from_request(raw, self.defaults, self.max_tokens_cap)
        prompt_ids = encode_prompt(self.tokenizer, prompt, self.limits)
        params = self.limits.fit(params, len(prompt_ids), explicit="max_tokens" in raw)
        return TextRequest(prompt_ids, params)
