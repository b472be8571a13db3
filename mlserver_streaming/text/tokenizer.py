"""What text generation needs from a tokenizer, whichever engine serves the model."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from tokenizers import Tokenizer


class Decoder(Protocol):
    """Token ids → text, special tokens skipped (all the detokenizer needs)."""

    def decode(self, ids: Sequence[int]) -> str: ...


class TextTokenizer(Decoder, Protocol):
    """Text ↔ token ids: prompts are encoded in the runtime, outputs decoded by the engine."""

    def encode(self, text: str) -> list[int]:
        """The ids of `text`, with no special tokens added (bos is the runtime's choice)."""
        ...

    @property
    def max_token_bytes(self) -> int:
        """The longest token's text in UTF-8 bytes (at least): a prompt of n tokens holds
        at most n times as many characters, so a longer one is refused untokenized."""
        ...


class HFTokenizer:
    """A Hugging Face `tokenizer.json` (the `tokenizers` library) as a TextTokenizer."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self._tokenizer = tokenizer

    @classmethod
    def from_file(cls, path: Path) -> HFTokenizer:
        """Load a `tokenizer.json`."""
        return cls(Tokenizer.from_file(str(path)))

    def encode(self, text: str) -> list[int]:
        return self._tokenizer.encode(text, add_special_tokens=False).ids

    @functools.cached_property
    def max_token_bytes(self) -> int:
        # Vocabulary strings are at least as long as the bytes they stand for (byte-level
        # BPE writes one byte as one character of up to 2 UTF-8 bytes).
        return max(len(token.encode()) for token in self._tokenizer.get_vocab())

    def decode(self, ids: Sequence[int]) -> str:
        return self._tokenizer.decode(list(ids), skip_special_tokens=True)
