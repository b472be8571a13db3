"""A GGUF file's vocabulary and metadata without its weights (llama.cpp's `vocab_only`).

MLServer's process tokenizes prompts and renders chats while the engine (weights, KV cache)
lives in the engine process: this is what the former needs, for a fraction of the memory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .gguf_tokenizer import GGUFTokenizer
from .llama_lib import check_gguf, llama_errors, llama_lib, load_error, meta_str


class GGUFVocab:
    """The tokenizer, special ids, training context and chat template of a GGUF file."""

    def __init__(self, lib: Any, model: Any, path: Path) -> None:
        self._lib, self._model, self.path = lib, model, path
        vocab = lib.llama_model_get_vocab(model)
        self.tokenizer = GGUFTokenizer(lib, vocab, self)
        self.bos_token_id = int(lib.llama_vocab_bos(vocab))
        self.eos_token_id = int(lib.llama_vocab_eos(vocab))
        self.add_bos = bool(lib.llama_vocab_get_add_bos(vocab))
        self.architecture = meta_str(lib, model, "general.architecture")
        # vocab_only loads no hyperparameters (n_ctx_train reads 0): the metadata has it.
        context = meta_str(lib, model, f"{self.architecture}.context_length")
        self.context_length = int(context) if context else 0
        self.chat_template = meta_str(lib, model, "tokenizer.chat_template")
        self.bos_text = self.tokenizer.piece(self.bos_token_id, special=True).decode(
            "utf-8", errors="replace"
        )
        self.eos_text = self.tokenizer.piece(self.eos_token_id, special=True).decode(
            "utf-8", errors="replace"
        )

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
