"""The A/B router: stable buckets, weighted splits, and routing real runtimes in-process."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from mlserver.repository.load import load_model_settings
from sklearn.linear_model import LogisticRegression

from mlserver_streaming.errors import InvalidParameter, InvalidSettings
from mlserver_streaming.events import ERROR, FINAL, FINISH_REASON, REQUEST_INDEX
from mlserver_streaming.router import (
    BUCKETS,
    PARAM_BUCKET,
    PARAM_SERVED_MODEL,
    PARAM_SERVED_VERSION,
    PARAM_USER_ID,
    ABRouter,
    Routes,
    bucket_of,
    user_id_of,
    without_user_id,
)
from tests.classifier.test_runtime import features_request, one_by_one, params, write_model

USERS = [f"user-{i}" for i in range(10_000)]


def test_a_bucket_is_sha256_of_salt_and_user_so_it_never_changes():
    digest = hashlib.sha256(b"exp:alice").digest()
    assert bucket_of("alice", "exp") == int.from_bytes(digest[:8], "big") % BUCKETS
    assert bucket_of("alice", "exp") == bucket_of("alice", "exp")
    assert all(0 <= bucket_of(user, "exp") < BUCKETS for user in USERS[:100])


@pytest.mark.parametrize(
    "weights",
    [
        pytest.param([50, 50], id="50-50"),
        pytest.param([0.8, 0.2], id="80-20"),
        pytest.param([1, 2, 7], id="10-20-70"),
    ],
)
def test_ten_thousand_users_split_as_the_weights_say(weights):
    versions = [str(i + 1) for i in range(len(weights))]
    routes = Routes(versions, weights)
    counts = Counter(routes.version_for(bucket_of(user, "exp")) for user in USERS)
    for version, weight in zip(versions, weights, strict=True):
        share = counts[version] / len(USERS)
        assert share == pytest.approx(weight / sum(weights), abs=0.015), (version, counts)


def test_raising_a_weight_moves_users_only_towards_the_grown_version():
    before, after = Routes(["1", "2"], [90, 10]), Routes(["1", "2"], [80, 20])
    moved = Counter(
        (before.version_for(b), after.version_for(b)) for b in (bucket_of(u, "exp") for u in USERS)
    )
    assert moved[("2", "1")] == 0
    assert moved[("1", "2")] == pytest.approx(1000, abs=150)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("alice", "alice"), (42, "42"), (None, None)],
)
def test_user_id_may_be_a_string_or_an_integer(value, expected):
    assert user_id_of({PARAM_USER_ID: value} if value is not None else {}) == expected


@pytest.mark.parametrize("value", [True, "", 1.5, ["a"]])
def test_other_user_ids_are_refused(value):
    with pytest.raises(InvalidParameter, match="user_id must be a non-empty string or an integer"):
        user_id_of({PARAM_USER_ID: value})


def test_the_target_never_sees_user_id():
    request = features_request(np.zeros((1, 4)), user_id="alice", chunk_size=1)
    forwarded = without_user_id(request)
    assert params(forwarded) == {"chunk_size": 1}
    assert params(request)[PARAM_USER_ID] == "alice"


# --- the router with two real classifier versions ------------------------------------


def write_router(tmp_path: Path, **extra) -> Path:
    """Two versions of a tiny classifier plus a router folder pointing at them."""
    for version, c in (("1", 0.1), ("2", 10.0)):
        estimator = LogisticRegression(C=c, random_state=0)
        estimator.fit(*_data())
        write_model(tmp_path / "tiny" / version, estimator, version=version)
    router = tmp_path / "ab"
    router.mkdir()
    targets = [{"folder": f"../tiny/{v}", "weight": 1} for v in ("1", "2")]
    document = {
        "name": "ab",
        "implementation": "mlserver_streaming.ABRouter",
        "parameters": {"extra": {"targets": targets, **extra}},
    }
    (router / "model-settings.json").write_text(json.dumps(document))
    return router / "model-settings.json"


def _data():
    x = np.random.default_rng(0).normal(size=(40, 4))
    return x, np.where(x[:, 0] > 0, "yes", "no")


@pytest.fixture
async def router(tmp_path):
    model = ABRouter(load_model_settings(str(write_router(tmp_path))))
    await model.load()
    yield model
    await model.unload()


def users_of(router: ABRouter) -> dict[str, str]:
    """A user of each version."""
    found: dict[str, str] = {}
    for user in USERS:
        decision = router.decide(features_request(np.zeros((1, 4)), user_id=user))
        found.setdefault(str(decision.tags[PARAM_SERVED_VERSION]), user)
        if len(found) == 2:
            return found
    raise AssertionError("the split never reached both versions")


async def test_each_user_sticks_to_one_version_and_the_response_says_which(router):
    for version, user in users_of(router).items():
        for _ in range(3):
            response = await router.predict(features_request(np.zeros((2, 4)), user_id=user))
            got = params(response)
            assert response.model_name == "ab" and response.model_version == version
            assert got[PARAM_SERVED_VERSION] == version and got[PARAM_SERVED_MODEL] == "tiny"
            assert got[PARAM_BUCKET] == bucket_of(user, "ab")


async def test_metadata_comes_from_the_targets(router):
    metadata = await router.metadata()
    assert [(t.name, t.shape) for t in metadata.inputs] == [("features", [-1, 4])]


async def test_a_request_without_user_id_is_refused_naming_the_field(router):
    with pytest.raises(
        InvalidParameter, match="parameter 'user_id' is required to choose a version"
    ):
        await router.predict(features_request(np.zeros((1, 4))))


async def test_a_stream_routes_each_request_on_its_own(router):
    users = users_of(router)
    requests = [
        features_request(np.zeros((2, 4)), user_id=users["1"], chunk_size=1),
        features_request(np.zeros((1, 4))),
        features_request(np.zeros((1, 4)), user_id=users["2"]),
    ]
    events = [e async for e in router.predict_stream(one_by_one(*requests))]
    got = [
        (p[REQUEST_INDEX], p.get(PARAM_SERVED_VERSION), p.get(FINAL, False), p.get(FINISH_REASON))
        for p in map(params, events)
    ]
    assert got == [
        (0, "1", False, None),
        (0, "1", True, "complete"),
        (1, None, True, "error"),
        (2, "2", True, "complete"),
    ]
    assert "parameter 'user_id' is required" in params(events[2])[ERROR]


async def test_default_version_serves_requests_without_user_id(tmp_path):
    model = ABRouter(load_model_settings(str(write_router(tmp_path, default_version="2"))))
    await model.load()
    try:
        response = await model.predict(features_request(np.zeros((1, 4))))
        assert params(response)[PARAM_SERVED_VERSION] == "2"
        assert PARAM_BUCKET not in params(response)
    finally:
        await model.unload()


async def test_an_unknown_default_version_fails_the_load(tmp_path):
    model = ABRouter(load_model_settings(str(write_router(tmp_path, default_version="3"))))
    with pytest.raises(InvalidSettings, match=r"default_version must be one of \['1', '2'\]"):
        await model.load()


def with_target_folder(path: Path, index: int, folder: str) -> Path:
    """The router settings at `path` with target `index` pointing at `folder`."""
    document = json.loads(path.read_text())
    document["parameters"]["extra"]["targets"][index]["folder"] = folder
    path.write_text(json.dumps(document))
    return path


async def test_two_targets_with_the_same_version_fail_the_load(tmp_path):
    path = with_target_folder(write_router(tmp_path), 1, "../tiny/1")
    with pytest.raises(InvalidSettings, match="each target needs its own parameters.version"):
        await ABRouter(load_model_settings(str(path))).load()


async def test_a_missing_target_folder_fails_the_load(tmp_path):
    path = with_target_folder(write_router(tmp_path), 0, "../nowhere")
    with pytest.raises(InvalidSettings, match="no model settings at .*nowhere"):
        await ABRouter(load_model_settings(str(path))).load()
