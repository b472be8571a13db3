"""One real server for the session, serving the project's own model-repo."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from .server import Server, running_server

ROOT = Path(__file__).resolve().parents[2]
# E2E_MODEL_REPO serves another repo laid out like model-repo (e.g. while a model retrains).
MODEL_REPO = Path(os.environ.get("E2E_MODEL_REPO", ROOT / "model-repo"))


def served_model_names(repo: Path) -> list[str]:
    """Every model name declared in a repo's model-settings.json files."""
    names = {json.loads(p.read_text())["name"] for p in repo.rglob("model-settings.json")}
    return sorted(names)


def one_model_repo(repo: Path, model: str, **extra: object) -> Path:
    """A repo in `repo` serving one model of MODEL_REPO with `extra` settings changed."""
    (repo / "settings.json").write_text((MODEL_REPO / "settings.json").read_text())
    settings = json.loads((MODEL_REPO / model / "model-settings.json").read_text())
    settings["parameters"]["uri"] = str((MODEL_REPO / model).resolve())
    settings["parameters"]["extra"].update(extra)
    (repo / model).mkdir()
    (repo / model / "model-settings.json").write_text(json.dumps(settings))
    return repo


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`mlserver start model-repo` on free local ports, exactly as a user runs it."""
    logs = tmp_path_factory.mktemp("logs")
    with running_server(MODEL_REPO, served_model_names(MODEL_REPO), logs) as srv:
        yield srv
