"""LoadedModels: lookup by name and version, MLServer's default version, reloads, unloads."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from mlserver import MLModel
from mlserver.errors import ModelNotFound
from mlserver.settings import ModelSettings

from mlserver_streaming.registry import LoadedModels


def model(name: str, version: str | None = None) -> Any:
    return SimpleNamespace(name=name, version=version)


def test_a_reload_answers_at_once_and_the_old_unload_keeps_the_new_one() -> None:
    loaded: LoadedModels[MLModel] = LoadedModels()
    settings = {"implementation": MLModel}
    old = MLModel(ModelSettings(name="poet", **settings))
    other = MLModel(ModelSettings(name="critic", **settings))
    loaded.add(old)
    loaded.add(other)
    assert loaded.names() == ["critic", "poet"] and loaded.get("poet") is old
    new = MLModel(ModelSettings(name="poet", **settings))
    loaded.add(new)
    assert loaded.get("poet") is new  # the newest load answers as soon as it is loaded
    loaded.remove(old)  # the old instance unloads after its replacement loaded
    assert loaded.get("poet") is new
    loaded.remove(new)
    assert loaded.get("poet") is None and loaded.names() == ["critic"]


def test_the_default_is_the_version_mlserver_picks() -> None:
    loaded: LoadedModels[Any] = LoadedModels()
    v2, v10, v1 = model("m", "2"), model("m", "10"), model("m", "1")
    for m in (v2, v10, v1):
        loaded.add(m)
    assert loaded.get("m") is v10  # numbers compare as numbers
    assert loaded.get("m", "2") is v2
    assert [m.version for m in loaded.all()] == ["1", "2", "10"]
    f16, q8_0 = model("gguf", "f16"), model("gguf", "q8_0")
    loaded.add(q8_0)
    loaded.add(f16)
    assert loaded.get("gguf") is q8_0  # other versions as strings, as MLServer's routes do
    assert loaded.names() == ["gguf", "m"]


def test_an_unversioned_model_is_the_default() -> None:
    loaded: LoadedModels[Any] = LoadedModels()
    plain, v3 = model("m", None), model("m", "3")
    loaded.add(v3)
    loaded.add(plain)
    assert loaded.get("m") is plain


def test_a_second_load_of_a_version_answers_and_the_first_answers_again_after_it() -> None:
    loaded: LoadedModels[Any] = LoadedModels()
    first, second = model("m", "1"), model("m", "1")
    loaded.add(first)
    loaded.add(second)  # e.g. the A/B router's in-process copy
    assert loaded.get("m", "1") is second and loaded.all() == [second]
    loaded.remove(second)
    assert loaded.get("m", "1") is first
    loaded.remove(first)
    assert loaded.get("m", "1") is None and loaded.all() == []
    with pytest.raises(ModelNotFound, match="Model m with version 1 not found"):
        loaded.require("m", "1")
    with pytest.raises(ModelNotFound, match="Model m not found"):
        loaded.require("m")
