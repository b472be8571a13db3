"""A text model's folder: which files it must hold, and the engine and tokenizer they make.

The one place that knows the folder's layout, read both by the runtime (tokenizer, context
window, special ids) and by the engine core (weights), whichever process each runs in.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..engine import GPT2Config, GPT2Engine
from ..engine.checkpoint import WEIGHTS_FILE
from ..engine.config import CONFIG_FILE
from ..errors import InvalidSettings
from .scheduler import Engine
from .tokenizer import HFTokenizer, TextTokenizer

TOKENIZER_FILE = "tokenizer.json"
GPT2_FILES = (CONFIG_FILE, WEIGHTS_FILE, TOKENIZER_FILE)


@dataclass(frozen=True)
class ModelFolder:
    """A GPT-2-family safetensors checkpoint with its `tokenizer.json`."""

    path: Path
    config: GPT2Config

    @classmethod
    def open(cls, path: Path, model_name: str) -> ModelFolder:
        """Check the folder's files and read its config; InvalidSettings names what is missing."""
        missing = [f for f in GPT2_FILES if not (path / f).is_file()]
        if missing:
            raise InvalidSettings(
                f"model {model_name!r}: {path} must hold {', '.join(GPT2_FILES)}; "
                f"missing {', '.join(missing)}."
            )
        return cls(path, GPT2Config.from_json(path / CONFIG_FILE))

    @property
    def context_window(self) -> int:
        """Longest sequence (prompt + output) the model can attend over."""
        return self.config.n_positions

    @property
    def bos_token_id(self) -> int | None:
        return self.config.bos_token_id

    @property
    def eos_token_id(self) -> int | None:
        return self.config.eos_token_id

    def tokenizer(self) -> TextTokenizer:
        """The model's tokenizer."""
        return HFTokenizer.from_file(self.path / TOKENIZER_FILE)

    def engine(self, max_slots: int) -> Engine:
        """The forward pass with `max_slots` KV cache slots (blocking: it loads weights)."""
        return GPT2Engine.from_pretrained(self.path, max_slots=max_slots)
