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

from typing import Generic, TypeVar

from mlserver.errors import ModelNotFound

from .events import ModelIdentity

ModelT = TypeVar("ModelT", bound=ModelIdentity)
Key = tuple[str, str | None]


def version_key(version: str | None) -> tuple[int, int, str]:
    """Sort key of versions: MLServer compares them as numbers when they are numbers, and
    an unversioned model is the default."""
    if version is None:
        return (2, 0, "")
    if version.isdigit():
        return (1, int(version), version)
    return (0, 0, version)


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
        versions = [key for key in self._loads if key[0] == name]
        if not versions:
            return None
        return self._loads[max(versions, key=lambda key: version_key(key[1]))][-1]

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
        keys = sorted(self._loads, key=lambda key: (key[0], version_key(key[1])))
        return [self._loads[key][-1] for key in keys]
