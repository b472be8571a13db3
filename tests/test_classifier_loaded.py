"""LoadedClassifiers: lookup by name and version, MLServer's default version, reloads."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from mlserver.errors import ModelNotFound

from mlserver_streaming.classifier.loaded import LoadedClassifiers


def model(name: str, version: str | None) -> Any:
    return SimpleNamespace(name=name, version=version)


def test_default_is_the_newest_numeric_version() -> None:
    loaded = LoadedClassifiers()
    v2, v10, v1 = model("m", "2"), model("m", "10"), model("m", "1")
    for m in (v2, v10, v1):
        loaded.add(m)
    assert loaded.get("m") is v10
    assert loaded.get("m", "2") is v2
    assert [m.version for m in loaded.all()] == ["1", "2", "10"]


def test_unversioned_model_is_the_default() -> None:
    loaded = LoadedClassifiers()
    plain, v3 = model("m", None), model("m", "3")
    loaded.add(v3)
    loaded.add(plain)
    assert loaded.get("m") is plain


def test_second_load_of_a_version_answers_after_the_first_unloads() -> None:
    loaded = LoadedClassifiers()
    first, second = model("m", "1"), model("m", "1")
    loaded.add(first)
    loaded.add(second)  # e.g. the A/B router's in-process copy
    assert loaded.get("m", "1") is first and len(loaded.all()) == 1
    loaded.remove(first)
    assert loaded.get("m", "1") is second
    loaded.remove(second)
    with pytest.raises(ModelNotFound, match="Model m with version 1 not found"):
        loaded.get("m", "1")
    with pytest.raises(ModelNotFound, match="Model m not found"):
        loaded.get("m")
