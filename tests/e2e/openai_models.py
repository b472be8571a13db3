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
        config = self.folder / "tokenizer_config.json"
        return config.is_file() and "chat_template" in json.loads(config.read_text())


def text_generators(repo: Path) -> list[TextModel]:
    """Every model-settings.json whose implementation is the text generator."""
    found = []
    for path in sorted(repo.rglob("model-settings.json")):
        settings = json.loads(path.read_text())
        if settings.get("implementation") != TEXT_GENERATOR:
            continue
        uri = (settings.get("parameters") or {}).get("uri", ".")
        found.append(TextModel(settings["name"], (path.parent / uri).resolve()))
    return found
