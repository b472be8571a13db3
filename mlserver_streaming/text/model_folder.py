"""What a text model's folder holds, and the engine and tokenizer it makes.

The folder chooses the engine: a `.gguf` file (`parameters.uri` naming it, or the one `.gguf`
in the folder, or the setting `gguf_file`) runs on llama.cpp, whatever its architecture; a
GPT-2-family safetensors checkpoint keeps the numpy engine. The one place that knows the
layouts, read by the runtime (tokenizer, context window, special ids, chat template) and by
the engine core (weights), whichever process each runs in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ..engine import GPT2Config, GPT2Engine
from ..engine.checkpoint import WEIGHTS_FILE
from ..engine.config import CONFIG_FILE
from ..engine.seams import Engine
from ..errors import InvalidSettings
from .settings import TextGenerationSettings
from .tokenizer import HFTokenizer, TextTokenizer

TOKENIZER_FILE = "tokenizer.json"
GPT2_FILES = (CONFIG_FILE, WEIGHTS_FILE, TOKENIZER_FILE)
GGUF_SUFFIX = ".gguf"
GGUF_DEFAULT_CONTEXT = 4096
"""Context per KV slot of a GGUF model unless `max_total_tokens` says otherwise: the file's
training context (32k-128k for current models) times `max_running` slots would not fit."""


@dataclass(frozen=True)
class EmbeddedChatTemplate:
    """A chat template carried by the model file itself (GGUF's `tokenizer.chat_template`)."""

    source: str
    special_tokens: dict[str, str]


class ModelFolder(Protocol):
    """A model as the text runtime needs it, whichever engine runs it."""

    @property
    def path(self) -> Path: ...

    @property
    def context_window(self) -> int:
        """Longest sequence (prompt + output) the model attends over."""
        ...

    @property
    def default_context(self) -> int:
        """The context per sequence when `max_total_tokens` is not set."""
        ...

    @property
    def bos_token_id(self) -> int | None: ...

    @property
    def eos_token_id(self) -> int | None: ...

    @property
    def eog_token_ids(self) -> frozenset[int]:
        """Every id that ends a generation (eos, end of turn, ...)."""
        ...

    @property
    def adds_bos(self) -> bool:
        """The model's own rule for starting prompts with bos (GGUF's `add_bos_token`)."""
        ...

    @property
    def embedded_chat_template(self) -> EmbeddedChatTemplate | None:
        """None: look for `tokenizer_config.json` in the folder (Hugging Face's convention)."""
        ...

    def tokenizer(self) -> TextTokenizer: ...

    def engine(self, settings: TextGenerationSettings) -> Engine:
        """The forward pass with `max_running` KV slots (blocking: it loads weights)."""
        ...

    def close(self) -> None:
        """Free what the folder holds (llama.cpp's vocabulary) at unload."""
        ...


def open_model_folder(path: Path, settings: TextGenerationSettings, model_name: str) -> ModelFolder:
    """The model at `parameters.uri`; InvalidSettings names what is missing or wrong."""
    gguf = _gguf_file(path, settings, model_name)
    if gguf is not None:
        return GGUFFolder.open(gguf)
    return GPT2Folder.open(path, model_name)


def _gguf_file(path: Path, settings: TextGenerationSettings, model_name: str) -> Path | None:
    if path.suffix == GGUF_SUFFIX:
        return path
    if settings.gguf_file is not None:
        return path / settings.gguf_file
    found = sorted(path.glob(f"*{GGUF_SUFFIX}")) if path.is_dir() else []
    if len(found) > 1:
        names = ", ".join(f.name for f in found)
        raise InvalidSettings(
            f"model {model_name!r}: {path} holds several GGUF files ({names}); name one with "
            "parameters.uri or parameters.extra.gguf_file."
        )
    return found[0] if found else None


@dataclass(frozen=True)
class GPT2Folder:
    """A GPT-2-family safetensors checkpoint with its `tokenizer.json`: the numpy engine."""

    path: Path
    config: GPT2Config
    adds_bos: bool = False
    embedded_chat_template: EmbeddedChatTemplate | None = None

    @classmethod
    def open(cls, path: Path, model_name: str) -> GPT2Folder:
        """Check the folder's files and read its config."""
        missing = [f for f in GPT2_FILES if not (path / f).is_file()]
        if missing:
            raise InvalidSettings(
                f"model {model_name!r}: {path} must hold a .gguf file or {', '.join(GPT2_FILES)}; "
                f"missing {', '.join(missing)}."
            )
        return cls(path, GPT2Config.from_json(path / CONFIG_FILE))

    @property
    def context_window(self) -> int:
        return self.config.n_positions

    @property
    def default_context(self) -> int:
        return self.config.n_positions

    @property
    def bos_token_id(self) -> int | None:
        return self.config.bos_token_id

    @property
    def eos_token_id(self) -> int | None:
        return self.config.eos_token_id

    @property
    def eog_token_ids(self) -> frozenset[int]:
        return frozenset(self.config.eos_token_ids)

    def tokenizer(self) -> TextTokenizer:
        return HFTokenizer.from_file(self.path / TOKENIZER_FILE)

    def engine(self, settings: TextGenerationSettings) -> Engine:
        return GPT2Engine.from_pretrained(self.path, max_slots=settings.max_running)

    def close(self) -> None:
        pass


@dataclass(frozen=True)
class GGUFFolder:
    """A GGUF model file: llama.cpp runs it, with its own vocabulary and chat template."""

    path: Path
    vocab: Any = field(repr=False)
    """The file's `GGUFVocab` (vocabulary and metadata, no weights)."""

    @classmethod
    def open(cls, path: Path) -> GGUFFolder:
        """Read the file's vocabulary and metadata (InvalidSettings if llama.cpp cannot)."""
        from ..engine.gguf_vocab import GGUFVocab  # llama-cpp-python is an extra

        return cls(path, GGUFVocab.load(path))

    @property
    def context_window(self) -> int:
        return self.vocab.context_length

    @property
    def default_context(self) -> int:
        return min(self.vocab.context_length, GGUF_DEFAULT_CONTEXT)

    @property
    def bos_token_id(self) -> int | None:
        return self.vocab.bos_token_id

    @property
    def eos_token_id(self) -> int | None:
        return self.vocab.eos_token_id

    @property
    def eog_token_ids(self) -> frozenset[int]:
        return self.vocab.eog_token_ids

    @property
    def adds_bos(self) -> bool:
        return self.vocab.add_bos

    @property
    def embedded_chat_template(self) -> EmbeddedChatTemplate | None:
        source = self.vocab.chat_template
        if source is None:
            return None
        tokens = {"bos_token": self.vocab.bos_text, "eos_token": self.vocab.eos_text}
        return EmbeddedChatTemplate(source, tokens)

    def tokenizer(self) -> TextTokenizer:
        return self.vocab.tokenizer

    def engine(self, settings: TextGenerationSettings) -> Engine:
        from ..engine.llama_cpp import LlamaCppEngine

        context = settings.max_total_tokens or self.default_context
        return LlamaCppEngine.from_gguf(
            self.path,
            max_slots=settings.max_running,
            context_per_slot=context,
            threads=settings.threads,
            unified_kv=settings.kv_unified,
            prefix_cache=settings.prefix_cache,
        )

    def close(self) -> None:
        self.vocab.close()
