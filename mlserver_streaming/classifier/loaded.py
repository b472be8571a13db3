"""The classifiers loaded in this process, by name and version, for the global custom routes.

MLServer's custom routes are global (see `mlserver_streaming.registry`), so the CSV upload
route looks its target up here. Classifiers have versions (`tumor-classifier` 1 and 2), so
unlike `LoadedModels` this keeps every version of a name, and a request without a version
gets the one MLServer's own routes would pick: an unversioned model, else the newest.

The A/B router loads its targets in-process (not through MLServer), so one (name, version)
can be loaded twice; both are kept, and the earlier load answers while it lasts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlserver.errors import ModelNotFound

if TYPE_CHECKING:
    from .runtime import StreamingClassifier


def _version_key(version: str | None) -> tuple[int, int, str]:
    """Sort key of versions: MLServer compares them as numbers when they are numbers."""
    if version is None:
        return (2, 0, "")
    if version.isdigit():
        return (1, int(version), version)
    return (0, 0, version)


class LoadedClassifiers:
    """Every loaded classifier version, each (name, version) answered by its earliest load."""

    def __init__(self) -> None:
        self._loads: dict[tuple[str, str | None], list[StreamingClassifier]] = {}

    @property
    def _models(self) -> dict[tuple[str, str | None], StreamingClassifier]:
        return {key: loads[0] for key, loads in self._loads.items()}

    def add(self, model: StreamingClassifier) -> None:
        """Call at the end of a successful `load`."""
        self._loads.setdefault((model.name, model.version), []).append(model)

    def remove(self, model: StreamingClassifier) -> None:
        """Call in `unload`; other loads of the same version stay."""
        key = (model.name, model.version)
        loads = [m for m in self._loads.get(key, []) if m is not model]
        if loads:
            self._loads[key] = loads
        else:
            self._loads.pop(key, None)

    def get(self, name: str, version: str | None = None) -> StreamingClassifier:
        """The classifier a V2 path names; ModelNotFound (404) if none is loaded."""
        if version is not None:
            model = self._models.get((name, version))
        else:
            versions = [m for (n, _), m in self._models.items() if n == name]
            model = max(versions, key=lambda m: _version_key(m.version), default=None)
        if model is None:
            raise ModelNotFound(name, version)
        return model

    def all(self) -> list[StreamingClassifier]:
        """Every loaded classifier, by name then version."""
        return [self._models[key] for key in sorted(self._models, key=_sort_key)]


def _sort_key(key: tuple[str, str | None]) -> tuple[str, tuple[int, int, str]]:
    return key[0], _version_key(key[1])


CLASSIFIERS = LoadedClassifiers()
"""The process's loaded classifiers (MLServer serves every model in one process here)."""
