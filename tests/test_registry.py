"""LoadedModels: lookup by name, reloads, unloads."""

from __future__ import annotations

from mlserver import MLModel
from mlserver.settings import ModelSettings

from mlserver_streaming.registry import LoadedModels


def model(name: str) -> MLModel:
    return MLModel(ModelSettings(name=name, implementation=MLModel))


def test_a_reload_replaces_and_the_old_unload_keeps_the_new_one() -> None:
    loaded: LoadedModels[MLModel] = LoadedModels()
    old, other = model("poet"), model("critic")
    loaded.add(old)
    loaded.add(other)
    assert loaded.names() == ["critic", "poet"] and loaded.get("poet") is old
    new = model("poet")
    loaded.add(new)
    loaded.remove(old)  # the old instance unloads after its replacement loaded
    assert loaded.get("poet") is new
    loaded.remove(new)
    assert loaded.get("poet") is None and loaded.names() == ["critic"]
