"""The streaming classifier in-process: request checks, outputs, metadata, chunked streams."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
from mlserver.codecs import StringCodec
from mlserver.repository.load import load_model_settings
from mlserver.settings import ModelSettings
from mlserver.types import (
    Datatype,
    InferenceRequest,
    InferenceResponse,
    MetadataTensor,
    RequestOutput,
)
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression, Perceptron
from sklearn.naive_bayes import GaussianNB
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from sklearn.tree import DecisionTreeClassifier

from mlserver_streaming.classifier import ClassifierSettings, StreamingClassifier
from mlserver_streaming.classifier.features import INPUT_FEATURES, parse_request
from mlserver_streaming.classifier.metadata import (
    META_CLASSES,
    input_metadata,
    output_metadata,
    reconcile,
)
from mlserver_streaming.classifier.outputs import (
    OUTPUT_CONFIDENCE,
    OUTPUT_LABEL,
    OUTPUT_PROBABILITIES,
    encode_scores,
)
from mlserver_streaming.classifier.runtime import (
    MODEL_FILENAME,
    PARAM_OFFSET,
    PARAM_ROWS_DONE,
    PARAM_ROWS_TOTAL,
)
from mlserver_streaming.classifier.scoring import Schema, Scorer
from mlserver_streaming.classifier.settings import PARAM_CHUNK_SIZE
from mlserver_streaming.errors import InvalidInput, InvalidParameter, InvalidSettings
from mlserver_streaming.events import ERROR, FINAL, FINISH_REASON, REQUEST_INDEX, FinishReason

N_FEATURES = 4
CLASSES = ["cat", "dog", "eel"]


def training_data(labels=CLASSES) -> tuple[np.ndarray, np.ndarray]:
    """Three well-separated blobs, one per label."""
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(3 * i, 0.5, (20, N_FEATURES)) for i in range(len(labels))])
    return x, np.repeat(np.asarray(labels), 20)


def tiny_estimator(labels=CLASSES, cls=LogisticRegression):
    return cls(random_state=0).fit(*training_data(labels))


def write_model(
    folder: Path,
    estimator: Any,
    *,
    name: str = "tiny",
    version: str | None = None,
    extra: dict | None = None,
    **settings: Any,
) -> ModelSettings:
    """A model folder (model.joblib + model-settings.json) as MLServer would find it."""
    folder.mkdir(parents=True, exist_ok=True)
    joblib.dump(estimator, folder / MODEL_FILENAME)
    parameters: dict[str, Any] = {"uri": f"./{MODEL_FILENAME}", "extra": extra or {}}
    if version is not None:
        parameters["version"] = version
    document = {
        "name": name,
        "implementation": "mlserver_streaming.StreamingClassifier",
        "parameters": parameters,
        **settings,
    }
    (folder / "model-settings.json").write_text(json.dumps(document))
    return load_model_settings(str(folder / "model-settings.json"))


def features_request(x, datatype="FP64", **params) -> InferenceRequest:
    x = np.asarray(x)
    tensor = {"name": INPUT_FEATURES, "datatype": datatype, "shape": list(x.shape)}
    body: dict[str, Any] = {"inputs": [{**tensor, "data": x.ravel().tolist()}]}
    if params:
        body["parameters"] = params
    return InferenceRequest.model_validate(body)


def params(response: InferenceResponse) -> dict[str, Any]:
    return response.parameters.model_dump(exclude_none=True) if response.parameters else {}


def output(response: InferenceResponse, name: str) -> np.ndarray:
    """An output as numpy; BYTES labels decoded to str, as a client sees them."""
    tensor = next(o for o in response.outputs if o.name == name)
    if Datatype(tensor.datatype) == Datatype.BYTES:
        return np.asarray(StringCodec.decode_output(tensor))
    return np.asarray(tensor.data.root).reshape(tensor.shape)


SCHEMA = Schema(n_features=N_FEATURES, classes=np.asarray(CLASSES), has_proba=True)
SETTINGS = ClassifierSettings(max_rows=10)


# --- schema and scoring --------------------------------------------------------------


def test_schema_reads_features_classes_and_proba_off_the_estimator():
    schema = Schema.of(tiny_estimator(), source="x")
    assert (schema.n_features, schema.classes.tolist(), schema.has_proba) == (4, CLASSES, True)
    assert not Schema.of(tiny_estimator(cls=Perceptron), source="x").has_proba


def test_an_unfitted_estimator_fails_the_load_naming_what_is_missing():
    with pytest.raises(InvalidSettings, match="m.joblib: a fitted scikit-learn classifier") as info:
        Schema.of(LogisticRegression(), source="m.joblib")
    assert "without n_features_in_, classes_" in str(info.value)


def test_labels_are_the_most_probable_class_and_agree_with_predict():
    estimator = tiny_estimator()
    x, _ = training_data()
    scores = Scorer(estimator, Schema.of(estimator, "x"))(x)
    assert scores.labels.tolist() == estimator.predict(x).tolist()
    assert scores.probabilities.dtype == np.float32
    np.testing.assert_allclose(scores.probabilities, estimator.predict_proba(x), rtol=1e-6)
    np.testing.assert_allclose(scores.confidence, scores.probabilities.max(axis=1))


# --- request checks ------------------------------------------------------------------


def test_rows_become_float64_whatever_the_float_width():
    request = parse_request(features_request(np.ones((2, 4)), "FP32"), SCHEMA, SETTINGS)
    assert request.rows.dtype == np.float64 and request.rows.shape == (2, 4)
    assert request.outputs == (OUTPUT_LABEL, OUTPUT_PROBABILITIES, OUTPUT_CONFIDENCE)
    assert request.chunk_size == SETTINGS.chunk_size


def test_chunk_size_may_arrive_as_a_numeric_string_from_grpc():
    request = features_request(np.ones((2, 4)), **{PARAM_CHUNK_SIZE: "3"})
    assert parse_request(request, SCHEMA, SETTINGS).chunk_size == 3


def _body(**tensor: Any) -> InferenceRequest:
    base = {"name": INPUT_FEATURES, "datatype": "FP64", "shape": [1, 4], "data": [1, 2, 3, 4]}
    return InferenceRequest.model_validate({"inputs": [{**base, **tensor}]})


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        pytest.param(
            _body(name="x"),
            "exactly one input 'features' is required (FP32 or FP64, shape [N, 4]), "
            "got inputs ['x']",
            id="wrong-name",
        ),
        pytest.param(
            _body(datatype="INT64"), "input 'features' must be FP32 or FP64, got INT64", id="dtype"
        ),
        pytest.param(
            _body(shape=[4]),
            "input 'features' must have shape [N, 4] (4 features per row), got [4]",
            id="rank",
        ),
        pytest.param(
            _body(shape=[2, 2]),
            "input 'features' must have shape [N, 4] (4 features per row), got [2, 2]",
            id="feature-count",
        ),
        pytest.param(
            _body(shape=[0, 4], data=[]),
            "input 'features' must have 1 to 10 rows (max_rows), got 0",
            id="empty",
        ),
        pytest.param(
            _body(shape=[11, 4], data=[0] * 44),
            "input 'features' must have 1 to 10 rows (max_rows), got 11",
            id="too-many-rows",
        ),
        pytest.param(
            _body(data=[1, 2, None, 4]),
            "input 'features' must hold finite numbers (no NaN, inf or null), got nan at row 0, "
            "feature 2",
            id="null",
        ),
        pytest.param(
            _body(shape=[2, 4], data=[0, 0, 0, 0, 0, float("inf"), 0, 0]),
            "got inf at row 1, feature 1",
            id="inf",
        ),
        pytest.param(
            _body(data=[1, 2, "x", 4]), "input 'features' data must be numbers", id="not-numbers"
        ),
        pytest.param(
            _body(data=[1, 2, 3]),
            "input 'features' of shape [1, 4] needs 4 values, got 3",
            id="short-data",
        ),
    ],
)
def test_bad_input_is_refused_naming_field_limit_and_value(request_, message):
    with pytest.raises(InvalidInput) as info:
        parse_request(request_, SCHEMA, SETTINGS)
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        pytest.param({"chunk_sise": 2}, "unknown parameter 'chunk_sise'", id="typo"),
        pytest.param({"chunk_size": 0}, "chunk_size must be in [1, 10], got 0", id="zero"),
        pytest.param({"chunk_size": "many"}, "chunk_size must be an integer", id="not-int"),
    ],
)
def test_bad_parameters_are_refused(parameters, message):
    with pytest.raises(InvalidParameter, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_request(features_request(np.ones((1, 4)), **parameters), SCHEMA, SETTINGS)


def test_a_request_may_ask_for_some_outputs_only():
    request = _body().model_copy(update={"outputs": [RequestOutput(name=OUTPUT_CONFIDENCE)]})
    assert parse_request(request, SCHEMA, SETTINGS).outputs == (OUTPUT_CONFIDENCE,)
    unknown = _body().model_copy(update={"outputs": [RequestOutput(name="logits")]})
    with pytest.raises(InvalidInput, match=r"unknown outputs \['logits'\]; available: label"):
        parse_request(unknown, SCHEMA, SETTINGS)


# --- outputs and metadata ------------------------------------------------------------


def test_outputs_have_the_shapes_and_datatypes_the_metadata_states():
    estimator = tiny_estimator()
    schema = Schema.of(estimator, "x")
    scores = Scorer(estimator, schema)(np.zeros((3, 4)))
    tensors = encode_scores(scores, (OUTPUT_LABEL, OUTPUT_PROBABILITIES, OUTPUT_CONFIDENCE))
    got = [(t.name, Datatype(t.datatype).value, t.shape) for t in tensors]
    stated = [(t.name, Datatype(t.datatype).value, t.shape) for t in output_metadata(schema)]
    assert got == [
        ("label", "BYTES", [3]),
        ("probabilities", "FP32", [3, 3]),
        ("confidence", "FP32", [3]),
    ]
    assert [(n, d, [-1] + s[1:]) for n, d, s in got] == stated


def test_integer_labels_stay_integers():
    estimator = tiny_estimator(labels=[7, 8, 9])
    scores = Scorer(estimator, Schema.of(estimator, "x"))(np.zeros((1, 4)))
    [label] = encode_scores(scores, (OUTPUT_LABEL,))
    assert (Datatype(label.datatype).value, label.data.root) == ("INT64", [7])


def test_metadata_states_feature_count_and_class_order():
    [features] = input_metadata(SCHEMA)
    assert (features.name, features.shape) == ("features", [-1, 4])
    label, probabilities, confidence = output_metadata(SCHEMA)
    assert json.loads(getattr(probabilities.parameters, META_CLASSES)) == CLASSES
    assert json.loads(getattr(label.parameters, META_CLASSES)) == CLASSES
    no_proba = Schema(n_features=4, classes=np.asarray([0, 1]), has_proba=False)
    assert [t.name for t in output_metadata(no_proba)] == ["label"]


def test_declared_metadata_is_kept_when_it_agrees_and_fails_the_load_when_stale():
    derived = input_metadata(SCHEMA)
    agreeing = [MetadataTensor(name="features", datatype="FP64", shape=[-1, 4])]
    assert reconcile(agreeing, derived, "m") == agreeing
    assert reconcile([], derived, "m") == derived
    stale = [MetadataTensor(name="features", datatype="FP32", shape=[-1, 5])]
    with pytest.raises(InvalidSettings, match=r"declared with shape \[-1, 5\], but the estimator"):
        reconcile(stale, derived, "m")


# --- the runtime ---------------------------------------------------------------------


@pytest.fixture
async def model(tmp_path) -> AsyncIterator[StreamingClassifier]:
    settings = write_model(tmp_path / "tiny", tiny_estimator(), extra={"chunk_size": 4})
    runtime = StreamingClassifier(settings)
    assert await runtime.load()
    yield runtime
    await runtime.unload()


async def one_by_one(*requests: InferenceRequest) -> AsyncIterator[InferenceRequest]:
    for request in requests:
        yield request


async def test_predict_answers_every_row_like_the_estimator(model):
    x, _ = training_data()
    response = await model.predict(features_request(x))
    estimator = tiny_estimator()  # the same fit as the fixture's
    assert output(response, "label").tolist() == estimator.predict(x).tolist()
    np.testing.assert_allclose(output(response, "probabilities"), estimator.predict_proba(x), 1e-6)
    assert params(response) == {
        FINAL: True,
        FINISH_REASON: FinishReason.COMPLETE,
        PARAM_OFFSET: 0,
        PARAM_ROWS_DONE: 60,
        PARAM_ROWS_TOTAL: 60,
    }


async def test_metadata_is_filled_in_from_the_estimator(model):
    metadata = await model.metadata()
    assert [(t.name, t.shape) for t in metadata.inputs] == [("features", [-1, 4])]
    assert [(t.name, t.shape) for t in metadata.outputs] == [
        ("label", [-1]),
        ("probabilities", [-1, 3]),
        ("confidence", [-1]),
    ]


async def test_stream_answers_in_chunks_with_progress_and_one_final_event(model):
    x, _ = training_data()
    events = [e async for e in model.predict_stream(one_by_one(features_request(x[:10])))]
    progress = [
        (p[PARAM_OFFSET], p[PARAM_ROWS_DONE], p[PARAM_ROWS_TOTAL], p.get(FINAL, False))
        for p in map(params, events)
    ]
    assert progress == [(0, 4, 10, False), (4, 8, 10, False), (8, 10, 10, True)]
    labels = np.concatenate([output(e, "label") for e in events])
    unary = await model.predict(features_request(x[:10]))
    assert labels.tolist() == output(unary, "label").tolist()


async def test_each_request_of_a_stream_ends_on_its_own_and_errors_do_not_end_the_stream(model):
    good = features_request(np.zeros((2, 4)), chunk_size=1)
    bad = features_request(np.zeros((2, 3)))
    events = [e async for e in model.predict_stream(one_by_one(good, bad, good))]
    summary = [(params(e)[REQUEST_INDEX], params(e).get(FINAL, False)) for e in events]
    assert summary == [(0, False), (0, True), (1, True), (2, False), (2, True)]
    error = params(events[2])
    assert error[FINISH_REASON] == "error"
    assert (
        "input 'features' must have shape [N, 4] (4 features per row), got [2, 3]" in error[ERROR]
    )


async def test_micro_batching_off_scores_the_same(tmp_path):
    estimator = tiny_estimator()
    batched = StreamingClassifier(write_model(tmp_path / "on", estimator))
    alone = StreamingClassifier(
        write_model(tmp_path / "off", estimator, extra={"max_batch_size": 1})
    )
    x, _ = training_data()  # 60 rows, every label
    await batched.load()
    await alone.load()
    try:
        want = await batched.predict(features_request(x))
        got = await alone.predict(features_request(x))
        assert output(got, OUTPUT_LABEL).tolist() == output(want, OUTPUT_LABEL).tolist()
        assert set(output(got, OUTPUT_LABEL)) == set(CLASSES)
        for name in (OUTPUT_PROBABILITIES, OUTPUT_CONFIDENCE):
            np.testing.assert_array_equal(output(got, name), output(want, name))
    finally:
        await batched.unload()
        await alone.unload()


async def test_a_model_without_predict_proba_answers_labels_only(tmp_path):
    runtime = StreamingClassifier(write_model(tmp_path / "p", tiny_estimator(cls=Perceptron)))
    await runtime.load()
    try:
        response = await runtime.predict(features_request(np.zeros((2, 4))))
        assert [o.name for o in response.outputs] == ["label"]
    finally:
        await runtime.unload()


async def test_bad_settings_fail_the_load_naming_the_key(tmp_path):
    settings = write_model(tmp_path / "s", tiny_estimator(), extra={"chunk_size": 0})
    with pytest.raises(InvalidSettings, match="chunk_size: Input should be greater than or equal"):
        await StreamingClassifier(settings).load()


class Broken(LogisticRegression):
    """Fitted, but its predictions fail: a stand-in for an artifact from another version."""

    def predict_proba(self, x):
        raise ValueError("incompatible artifact")


async def test_an_estimator_that_cannot_score_fails_the_load(tmp_path):
    estimator = Broken(random_state=0).fit(*training_data())
    settings = write_model(tmp_path / "b", estimator)
    runtime = StreamingClassifier(settings)
    with pytest.raises(InvalidSettings, match="scoring one row of zeros failed: ValueError"):
        await runtime.load()
    await runtime.unload()


# --- cold starts ---------------------------------------------------------------------

# A fresh interpreter loads every model folder given at once, as `mlserver start` does:
# nothing has imported scikit-learn yet, so the unpickling threads import it themselves.
LOAD_AT_ONCE = """
import asyncio, sys
from mlserver.repository.load import load_model_settings
from mlserver_streaming.classifier import StreamingClassifier

async def main(folders):
    runtimes = [StreamingClassifier(load_model_settings(f + "/model-settings.json"))
                for f in folders]
    results = await asyncio.gather(*(r.load() for r in runtimes), return_exceptions=True)
    for runtime in runtimes:
        await runtime.unload()
    sys.exit("; ".join(repr(r) for r in results if r is not True) or None)

asyncio.run(main(sys.argv[1:]))
"""
COLD_STARTS = 10
"""Without the unpickling lock each of 36 such starts lost models here, so 10 starts
cannot miss a regression by luck; two at a time take about 3 s each."""


def cold_start_models(folder: Path) -> list[str]:
    """Versions whose pickles import different corners of scikit-learn first."""
    estimators = [
        make_pipeline(StandardScaler(), LogisticRegression()),
        HistGradientBoostingClassifier(max_iter=5),
        RandomForestClassifier(n_estimators=3, random_state=0),
        DecisionTreeClassifier(random_state=0),
        KNeighborsClassifier(n_neighbors=3),
        GaussianNB(),
        SVC(random_state=0),
    ]
    for version, estimator in enumerate(estimators, start=1):
        write_model(folder / str(version), estimator.fit(*training_data()), version=str(version))
    return [str(folder / str(version)) for version in range(1, len(estimators) + 1)]


def cold_start(folders: list[str]) -> subprocess.CompletedProcess[str]:
    """One fresh process that loads `folders` concurrently; exit status 1 names failures."""
    command = [sys.executable, "-c", LOAD_AT_ONCE, *folders]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def test_cold_starts_load_every_version_at_once(tmp_path):
    folders = cold_start_models(tmp_path)
    with ThreadPoolExecutor(max_workers=2) as pool:
        runs = list(pool.map(cold_start, [folders] * COLD_STARTS))
    failed = [run.stderr.strip().splitlines()[-1:] for run in runs if run.returncode != 0]
    assert not failed, f"{len(failed)} of {COLD_STARTS} cold starts lost a model: {failed}"
