"""The text generators loaded in this process: what every global text route looks in
(the OpenAI routes by `model`, the stream routes by stream id)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..registry import LoadedModels

if TYPE_CHECKING:
    from .runtime import TextGenerator

TEXT_GENERATORS: LoadedModels[TextGenerator] = LoadedModels()
