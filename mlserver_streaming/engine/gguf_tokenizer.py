"""Tokenization from a GGUF model's own vocabulary, through llama.cpp."""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Sequence
from typing import Any


class GGUFTokenizer:
    """``encode(text) -> ids`` and ``decode(ids) -> text`` with a llama.cpp model's vocabulary.

    ``encode`` adds no BOS and parses no special tokens (a prompt that contains
    ``<|endoftext|>`` is text, as with the numpy engine). ``decode`` joins the tokens' raw
    byte pieces and decodes them as UTF-8 with replacement, so a character split over tokens
    is U+FFFD until its last byte arrives — what the incremental detokenizer waits on.
    """

    def __init__(self, lib: Any, vocab: Any, owner: object) -> None:
        self._lib = lib
        self._vocab = vocab
        self._owner = owner  # the model that owns `vocab`: kept alive as long as we are
        self.vocab_size = int(lib.llama_vocab_n_tokens(vocab))
        self._pieces: tuple[dict[int, bytes], dict[int, bytes]] = ({}, {})  # by `special`
        self._buf = ctypes.create_string_buffer(256)

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        """Token ids of ``text``; with ``add_special_tokens`` the model's BOS/EOS rules apply."""
        data = text.encode("utf-8")
        capacity = len(data) + 2
        while True:
            ids = (ctypes.c_int32 * capacity)()
            n = self._lib.llama_tokenize(
                self._vocab, data, len(data), ids, capacity, add_special_tokens, False
            )
            if n >= 0:
                return list(ids[:n])
            capacity = -n  # too small: llama.cpp says how many it needs

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        """Text of ``ids``; control tokens (EOS, BOS…) are left out unless asked for."""
        pieces = b"".join(self.piece(int(i), not skip_special_tokens) for i in ids)
        return pieces.decode("utf-8", errors="replace")

    @functools.cached_property
    def max_token_bytes(self) -> int:
        """The longest token's bytes (special ones as text too: a prompt holds them as text)."""
        return max(len(self._render(i, True)) for i in range(self.vocab_size))

    def piece(self, token_id: int, special: bool = False) -> bytes:
        """The raw bytes of one token (empty for a control token unless ``special``)."""
        pieces = self._pieces[special]
        piece = pieces.get(token_id)
        if piece is None:
            if not 0 <= token_id < self.vocab_size:
                raise ValueError(f"token id must be in [0, {self.vocab_size}), got {token_id}.")
            piece = pieces[token_id] = self._render(token_id, special)
        return piece

    def _render(self, token_id: int, special: bool) -> bytes:
        while True:
            size = len(self._buf)
            n = self._lib.llama_token_to_piece(self._vocab, token_id, self._buf, size, 0, special)
            if n >= 0:
                return self._buf.raw[:n]
            self._buf = ctypes.create_string_buffer(-n)
