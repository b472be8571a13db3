"""The models of one kind loaded in this process, for routes that serve them all.

MLServer's custom routes are global: every loaded model of a runtime adds the same path,
the first one added answers, and each model's own routes go when it unloads. So a route
must not serve `self`: it looks the model up here by the name the request gives (the
OpenAI `model` field, a path segment), and any loaded model's route can answer for all.
"""

from __future__ import annotations

from typing import Generic, TypeVar

from mlserver import MLModel

ModelT = TypeVar("ModelT", bound=MLModel)


class LoadedModels(Generic[ModelT]):
    """Loaded models by name; the newest load of a name wins (a reload replaces it)."""

    def __init__(self) -> None:
        self._models: dict[str, ModelT] = {}

    def add(self, model: ModelT) -> None:
        """Call at the end of a successful `load`."""
        self._models[model.name] = model

    def remove(self, model: ModelT) -> None:
        """Call in `unload`; a newer model of the same name stays."""
        if self._models.get(model.name) is model:
            del self._models[model.name]

    def get(self, name: str) -> ModelT | None:
        """The loaded model called `name`, or None."""
        return self._models.get(name)

    def names(self) -> list[str]:
        """Every loaded model's name, sorted."""
        return sorted(self._models)
