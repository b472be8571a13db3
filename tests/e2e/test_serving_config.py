"""A real server whose settings.json turns on parallel workers, which break streaming."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx
import pytest

from .conftest import MODEL_REPO
from .server import running_server

pytestmark = pytest.mark.e2e

WORDS = "text-model"
CLASSIFIER = "tumor-classifier"
REFUSAL = (
    f"model '{WORDS}' is loading in MLServer's parallel inference pool (parallel_workers >= 1), "
    "where a stream gets one response, to its first request only; WordStreamModel only "
    'streams: set "parallel_workers": 0 in settings.json'
)


def parallel_repo(folder: Path, **settings) -> Path:
    """The word model and classifier v1 from model-repo, served with one parallel worker."""
    folder.mkdir()
    (folder / "settings.json").write_text(json.dumps({"parallel_workers": 1, **settings}))
    shutil.copytree(MODEL_REPO / WORDS, folder / WORDS)
    shutil.copytree(MODEL_REPO / CLASSIFIER / "1", folder / CLASSIFIER)
    return folder


def test_a_streaming_only_model_stops_the_start_with_the_setting_to_change(tmp_path):
    repo = parallel_repo(tmp_path / "repo")
    with (
        pytest.raises(RuntimeError, match="mlserver exited") as info,
        running_server(repo, [WORDS, CLASSIFIER], tmp_path),
    ):
        pass
    log = str(info.value)
    assert REFUSAL in log
    assert "Some of the models failed to load during startup!" in log


async def test_loading_through_the_repository_api_says_why(tmp_path):
    repo = parallel_repo(tmp_path / "repo", load_models_at_startup=False)
    with running_server(repo, [], tmp_path) as server:
        async with httpx.AsyncClient(base_url=server.http_url, timeout=60) as client:
            refused = await client.post(f"/v2/repository/models/{WORDS}/load")
            assert refused.status_code == 422
            assert REFUSAL in refused.json()["error"]
            assert (await client.get(f"/v2/models/{WORDS}/ready")).status_code != 200

            # The classifier answers unary calls there, so it loads, with an error logged.
            loaded = await client.post(f"/v2/repository/models/{CLASSIFIER}/load")
            assert loaded.status_code == 200
            features = {"name": "features", "datatype": "FP64", "shape": [1, 30]}
            body = {"inputs": [{**features, "data": [0.0] * 30}]}
            reply = await client.post(f"/v2/models/{CLASSIFIER}/infer", json=body)
            assert reply.status_code == 200
        log = server.log()
        assert f"model '{CLASSIFIER}' is loading in MLServer's parallel inference pool" in log
        assert 'unary calls still work. To stream, set "parallel_workers": 0' in log
