"""The text generators of a model repository, as the OpenAI e2e tests see them."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

TEXT_GENERATOR = "mlserver_streaming.TextGenerator"


@dataclass(frozen=True)
class TextModel:
    """A text generator declared in a repo, and whether its folder has a chat template."""

    name: str
    folder: Path

    @property
    def has_chat_template(self) -> bool:
        if self.folder.suffix == ".gguf":  # the template travels in the file's metadata
            import gguf

            reader = gguf.GGUFReader(self.folder)
            return reader.get_field("tokenizer.chat_template") is not None
        config = self.folder / "tokenizer_config.json"
        return config.is_file() and "chat_template" in json.loads(config.read_text())


def text_generators(repo: Path) -> list[TextModel]:
    """Every text generator name in the repo (OpenAI's `model` names a model, not a version:
    of several versions, the first folder stands for them)."""
    found: list[TextModel] = []
    for path in sorted(repo.rglob("model-settings.json")):
        settings = json.loads(path.read_text())
        if settings.get("implementation") != TEXT_GENERATOR:
            continue
        uri = (settings.get("parameters") or {}).get("uri", ".")
        if settings["name"] not in [m.name for m in found]:
            found.append(TextModel(settings["name"], (path.parent / uri).resolve()))
    return found
