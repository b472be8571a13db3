"""The models of one kind loaded in this process, for routes that serve them all.

MLServer's custom routes are global: every loaded model of a runtime adds the same path,
the first one added answers, and each model's own routes go when it unloads. So a route
must not serve `self`: it looks the model up here by the name (and version) the request
gives (the OpenAI `model` field, a path segment), and any loaded model's route can answer
for all.

One rule for every kind: each (name, version) is answered by its newest load, so a reload
answers with the new model as soon as it is loaded; when a load goes, the one before it
answers again (the A/B router loads its targets in-process, beside MLServer's own loads of
the same folders). A request without a version gets the one MLServer's own routes would
pick: an unversioned model, else the newest version.
"""

from __future__ import annotations

from functools import cmp_to_key
from typing import Generic, TypeVar

from mlserver.errors import ModelNotFound
from mlserver.registry import _is_newer  # MLServer's own version order (pinned 1.7.1)

from .events import ModelIdentity

ModelT = TypeVar("ModelT", bound=ModelIdentity)
Key = tuple[str, str | None]
_NEWER = cmp_to_key(_is_newer)
"""Sort key of loads by version, as MLServer orders them: numbers as numbers, other
versions as strings, an unversioned model above all (the default)."""


class LoadedModels(Generic[ModelT]):
    """Loaded models by (name, version); the newest load of each answers."""

    def __init__(self) -> None:
        self._loads: dict[Key, list[ModelT]] = {}

    def add(self, model: ModelT) -> None:
        """Call at the end of a successful `load`."""
        self._loads.setdefault((model.name, model.version), []).append(model)

    def remove(self, model: ModelT) -> None:
        """Call in `unload`; other loads of the same (name, version) stay."""
        key = (model.name, model.version)
        loads = [m for m in self._loads.get(key, []) if m is not model]
        if loads:
            self._loads[key] = loads
        else:
            self._loads.pop(key, None)

    def get(self, name: str, version: str | None = None) -> ModelT | None:
        """The model a request names (its default version without one), or None."""
        if version is not None:
            loads = self._loads.get((name, version))
            return loads[-1] if loads else None
        versions = [loads[-1] for (n, _), loads in self._loads.items() if n == name]
        return max(versions, key=_NEWER, default=None)

    def require(self, name: str, version: str | None = None) -> ModelT:
        """`get`, or MLServer's ModelNotFound (a 404)."""
        model = self.get(name, version)
        if model is None:
            raise ModelNotFound(name, version)
        return model

    def names(self) -> list[str]:
        """Every loaded model's name, sorted, once each."""
        return sorted({name for name, _ in self._loads})

    def all(self) -> list[ModelT]:
        """Every loaded (name, version)'s answering model, by name then version."""
        answering = [loads[-1] for loads in self._loads.values()]
        return sorted(answering, key=lambda model: (model.name, _NEWER(model)))
