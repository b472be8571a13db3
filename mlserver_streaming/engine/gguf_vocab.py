"""A GGUF file's vocabulary and metadata without its weights (llama.cpp's `vocab_only`).

MLServer's process tokenizes prompts and renders chats while the engine (weights, KV cache)
lives in the engine process: this is what the former needs, for a fraction of the memory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .gguf_tokenizer import GGUFTokenizer
from .llama_lib import check_gguf, llama_errors, llama_lib, load_error, meta_str


def _special(token_id: int) -> int | None:
    """A special token's id; llama.cpp says -1 for one the vocabulary lacks."""
    return None if token_id < 0 else int(token_id)


class GGUFVocab:
    """The tokenizer, special ids, training context and chat template of a GGUF file.

    Read the same way from a vocab-only load (`load`, which owns the model) and from the
    engine's full load (`owns_model=False`: the engine frees it)."""

    def __init__(self, lib: Any, model: Any, path: Path, owns_model: bool = True) -> None:
        self._lib, self.path = lib, path
        self._model = model if owns_model else None
        vocab = lib.llama_model_get_vocab(model)
        self.tokenizer = GGUFTokenizer(lib, vocab, self)
        self.bos_token_id = _special(lib.llama_vocab_bos(vocab))
        self.eos_token_id = _special(lib.llama_vocab_eos(vocab))
        # Every id llama.cpp ends a generation on (eos, eot, <|im_end|>, <end_of_turn>, ...),
        # as llama-server stops: an instruct model ends its turn with one of these.
        n_vocab = self.tokenizer.vocab_size
        self.eog_token_ids = frozenset(
            i for i in range(n_vocab) if lib.llama_vocab_is_eog(vocab, i)
        )
        self.add_bos = bool(lib.llama_vocab_get_add_bos(vocab))
        self.architecture = meta_str(lib, model, "general.architecture")
        # vocab_only loads no hyperparameters (n_ctx_train reads 0): the metadata has it.
        context = meta_str(lib, model, f"{self.architecture}.context_length")
        self.context_length = int(context) if context else 0
        self.chat_template = meta_str(lib, model, "tokenizer.chat_template")
        self.bos_text = self._text_of(self.bos_token_id)
        self.eos_text = self._text_of(self.eos_token_id)

    def _text_of(self, token_id: int | None) -> str:
        """A special token as text (what chat templates call `bos_token`, `eos_token`); ""
        for a vocabulary without it."""
        if token_id is None:
            return ""
        return self.tokenizer.piece(token_id, special=True).decode("utf-8", errors="replace")

    @classmethod
    def load(cls, path: Path) -> GGUFVocab:
        """Read the vocabulary and metadata; InvalidSettings names the file and the problem."""
        check_gguf(path)
        lib = llama_lib()
        params = lib.llama_model_default_params()
        params.vocab_only = True
        llama_errors.clear()
        model = lib.llama_model_load_from_file(str(path).encode(), params)
        if not model:
            raise load_error(path)
        return cls(lib, model, path)

    def close(self) -> None:
        """Free llama.cpp's model (also done when this is collected)."""
        if getattr(self, "_model", None):
            self._lib.llama_model_free(self._model)
            self._model = None

    def __del__(self) -> None:
        self.close()
