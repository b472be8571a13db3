"""The prompt: read from the request, tokenized, and checked against the context window."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from mlserver.types import InferenceRequest

from ..errors import InvalidInput, InvalidParameter, InvalidSettings
from ..inputs import INPUT_PROMPT, single_string
from .sample.params import GenerationParams
from .settings import TextGenerationSettings
from .tokenizer import TextTokenizer


@dataclass(frozen=True)
class PromptLimits:
    """Token limits of one model, resolved against its context window at load."""

    max_prompt_tokens: int
    max_total_tokens: int
    bos_token_id: int | None = None
    """Put in front of every prompt when set (counts as a prompt token)."""
    max_prompt_chars: int | None = None
    """No prompt of max_prompt_tokens tokens holds more characters (the longest token's
    bytes times the token limit): a longer prompt is refused before it is tokenized."""

    @classmethod
    def from_settings(
        cls,
        settings: TextGenerationSettings,
        model_name: str,
        context: int,
        bos_token_id: int | None = None,
        default_total: int | None = None,
        max_token_bytes: int | None = None,
    ) -> PromptLimits:
        """Defaults fill `default_total` (the context window unless the model says less);
        explicit settings may go up to the context window."""
        total = settings.max_total_tokens or default_total or context
        prompt = settings.max_prompt_tokens or total - 1
        where = f"model {model_name!r}: parameters.extra"
        if total > context:
            raise InvalidSettings(
                f"{where}.max_total_tokens must be <= the context window ({context}), got {total}."
            )
        if prompt >= total:
            raise InvalidSettings(
                f"{where}.max_prompt_tokens must be < max_total_tokens ({total}), got {prompt}."
            )
        chars = None if max_token_bytes is None else prompt * max_token_bytes
        return cls(prompt, total, bos_token_id, chars)

    def fit(self, params: GenerationParams, prompt_tokens: int, explicit: bool) -> GenerationParams:
        """Keep prompt + max_tokens inside max_total_tokens.

        An explicit `max_tokens` that does not fit is an error; a default one is shortened.
        """
        room = self.max_total_tokens - prompt_tokens
        if params.max_tokens <= room:
            return params
        if explicit:
            raise InvalidParameter(
                f"max_tokens must be <= {room} for this prompt ({prompt_tokens} prompt tokens, "
                f"max_total_tokens={self.max_total_tokens}), got {params.max_tokens}."
            )
        return dataclasses.replace(params, max_tokens=room)


def decode_prompt(request: InferenceRequest) -> str:
    """The prompt string; it must not be empty."""
    prompt = single_string(request, INPUT_PROMPT)
    if not prompt:
        raise InvalidInput(f"input {INPUT_PROMPT!r} must not be empty.")
    return prompt


def encode_prompt(tokenizer: TextTokenizer, prompt: str, limits: PromptLimits) -> list[int]:
    """Token ids of the prompt, or an error when it is longer than the model accepts."""
    if limits.max_prompt_chars is not None and len(prompt) > limits.max_prompt_chars:
        raise InvalidInput(
            f"input {INPUT_PROMPT!r} must be at most {limits.max_prompt_tokens} tokens; its "
            f"{len(prompt)} characters are more than any prompt of that many tokens holds "
            f"({limits.max_prompt_chars})."
        )
    ids = tokenizer.encode(prompt)
    if limits.bos_token_id is not None:
        ids = [limits.bos_token_id, *ids]
    if not ids:
        raise InvalidInput(f"input {INPUT_PROMPT!r} encodes to no tokens.")
    if len(ids) > limits.max_prompt_tokens:
        raise InvalidInput(
            f"input {INPUT_PROMPT!r} must be at most {limits.max_prompt_tokens} tokens, "
            f"got {len(ids)}."
        )
    return ids
