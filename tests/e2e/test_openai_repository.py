"""Two text generators in one server: unloading, loading and reloading either one through
MLServer's repository API never breaks the other's OpenAI routes (routes are global)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from .conftest import MODEL_REPO
from .server import Server, running_server

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

NAMES = ("bard", "poet")


@pytest.fixture(scope="module")
def two_poets(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    repo = tmp_path_factory.mktemp("two-generators")
    (repo / "settings.json").write_text((MODEL_REPO / "settings.json").read_text())
    base = json.loads((MODEL_REPO / "shakespeare" / "model-settings.json").read_text())
    for name in NAMES:
        settings = {**base, "name": name}
        settings["parameters"] = {
            **base["parameters"],
            "uri": str((MODEL_REPO / "shakespeare").resolve()),
        }
        (repo / name).mkdir()
        (repo / name / "model-settings.json").write_text(json.dumps(settings))
    with running_server(repo, list(NAMES), tmp_path_factory.mktemp("logs")) as server:
        yield server


def answers(client: httpx.Client) -> dict[str, int]:
    """Each name's status on /v1/completions and /v1/chat/completions (200 or 404)."""
    out = {}
    for name in NAMES:
        completion = client.post(
            "/v1/completions", json={"model": name, "prompt": "ROMEO:\n", "max_tokens": 3}
        )
        chat = client.post(
            "/v1/chat/completions",
            json={"model": name, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3},
        )
        assert completion.status_code == chat.status_code, (completion.text, chat.text)
        out[name] = completion.status_code
    return out


def listed(client: httpx.Client) -> list[str]:
    return [m["id"] for m in client.get("/v1/models").json()["data"]]


def repository(client: httpx.Client, name: str, action: str) -> None:
    response = client.post(f"/v2/repository/models/{name}/{action}", timeout=120)
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("first", NAMES)
def test_unload_load_and_reload_leave_the_other_served(two_poets, first):
    other = next(n for n in NAMES if n != first)
    with httpx.Client(base_url=two_poets.http_url, timeout=60) as client:
        assert answers(client) == {"bard": 200, "poet": 200}
        repository(client, first, "unload")
        assert listed(client) == [other]
        assert answers(client) == {first: 404, other: 200}
        repository(client, first, "load")
        assert listed(client) == sorted(NAMES) and answers(client) == {"bard": 200, "poet": 200}
        repository(client, first, "load")  # loading a loaded model reloads it
        assert listed(client) == sorted(NAMES) and answers(client) == {"bard": 200, "poet": 200}
        repository(client, other, "unload")
        assert answers(client) == {first: 200, other: 404}
        repository(client, other, "load")
        assert answers(client) == {"bard": 200, "poet": 200}
