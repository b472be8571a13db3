#!/usr/bin/env python
"""Train the demo classifier: two versions of a tumour classifier, served under one name.

The data is scikit-learn's bundled breast-cancer dataset (Wisconsin diagnostic, no
download): 569 tumours, 30 measurements of cell nuclei, labelled malignant or benign.
Both versions see the same stratified 75/25 split (seed 0):

    1  StandardScaler + LogisticRegression     (linear)
    2  HistGradientBoostingClassifier          (boosted trees)

For each version the script writes into ``<repo>/tumor-classifier/<version>/``::

    model.joblib         the fitted estimator (string labels: benign, malignant)
    model-settings.json  name, version and runtime settings for MLServer
    README.md            the model card, with the held-out numbers printed below

Rebuild (the joblib files must be loaded with the scikit-learn pinned in pyproject.toml)::

    .venv/bin/python training/train_classifier.py            # writes model-repo/
    .venv/bin/python training/train_classifier.py --repo /tmp/repo

It ends with one ``SUMMARY {...}`` JSON line holding every number quoted in the cards.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import joblib
import numpy as np
import sklearn
from sklearn.datasets import load_breast_cancer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, log_loss
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

ROOT = Path(__file__).resolve().parents[1]
MODEL_NAME = "tumor-classifier"
SEED = 0
TEST_SIZE = 0.25
RUNTIME = "mlserver_streaming.StreamingClassifier"
# Runtime settings shared by both versions (see mlserver_streaming/classifier/settings.py).
EXTRA = {"chunk_size": 1000, "max_rows": 200_000, "max_batch_size": 512, "max_batch_time_ms": 2}

CARD = """# {name} — version {version} ({kind})

{description}

| | |
| --- | --- |
| Estimator | `{estimator}` |
| Data | scikit-learn's bundled breast-cancer dataset (Wisconsin diagnostic): {n_samples} tumours |
| Split | stratified {train_rows} train / {test_rows} held-out rows, `random_state={seed}` |
| Held-out accuracy | **{accuracy:.4f}** ({correct}/{test_rows}) |
| Held-out log loss | {log_loss:.4f} |
| Train accuracy | {train_accuracy:.4f} |
| scikit-learn | {sklearn_version} (load with this exact version) |

**Input** `features`: FP32 or FP64, shape `[N, {n_features}]`, columns in this order:
{features}

**Outputs**: `label` `[N]` (one of {classes}), `probabilities` `[N, {n_classes}]` FP32 in the
class order {classes}, `confidence` `[N]` FP32 (the top probability).

`{name}` is served in versions 1 and 2; a request that names no version gets version 2.
MLServer's default is the largest version, compared as integers when both parse as
integers and as strings otherwise (so "10" beats "9", but "v9" beats "v10"); a
model-settings.json without `parameters.version` would beat every numbered one.

Rebuild with `python training/train_classifier.py` (numbers above are its output).
"""


def estimators() -> dict[str, tuple[str, str, sklearn.base.ClassifierMixin]]:
    """Version → (kind, description, unfitted estimator); fixed seeds everywhere."""
    return {
        "1": (
            "linear",
            "Multinomial logistic regression on standardised features.",
            make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, random_state=SEED)),
        ),
        "2": (
            "boosted",
            "Histogram gradient-boosted trees (100 iterations, early stopping off).",
            HistGradientBoostingClassifier(
                max_iter=100, early_stopping=False, random_state=SEED, min_samples_leaf=10
            ),
        ),
    }


def split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """The fixed split, with string labels so responses say "malignant", not 0."""
    data = load_breast_cancer()
    labels = np.asarray(data.target_names)[data.target]
    x_train, x_test, y_train, y_test = train_test_split(
        data.data, labels, test_size=TEST_SIZE, random_state=SEED, stratify=labels
    )
    return x_train, x_test, y_train, y_test, list(data.feature_names)


def model_settings(version: str) -> dict:
    """The model-settings.json of one version: same name, its own `parameters.version`."""
    return {
        "name": MODEL_NAME,
        "implementation": RUNTIME,
        "platform": "sklearn",
        "versions": [f"scikit-learn/{sklearn.__version__}"],
        "parameters": {"version": version, "uri": "./model.joblib", "extra": EXTRA},
    }


def train_one(version: str, out: Path, data: tuple) -> dict:
    """Fit, evaluate on the held-out rows and write the three files of one version."""
    x_train, x_test, y_train, y_test, feature_names = data
    kind, description, estimator = estimators()[version]
    estimator.fit(x_train, y_train)
    predicted = estimator.predict(x_test)
    numbers = {
        "version": version,
        "kind": kind,
        "accuracy": float(accuracy_score(y_test, predicted)),
        "correct": int((predicted == y_test).sum()),
        "log_loss": float(log_loss(y_test, estimator.predict_proba(x_test))),
        "train_accuracy": float(accuracy_score(y_train, estimator.predict(x_train))),
        "train_rows": len(y_train),
        "test_rows": len(y_test),
    }
    folder = out / MODEL_NAME / version
    folder.mkdir(parents=True, exist_ok=True)
    joblib.dump(estimator, folder / "model.joblib")
    (folder / "model-settings.json").write_text(
        json.dumps(model_settings(version), indent=2) + "\n"
    )
    classes = ", ".join(f"`{c}`" for c in estimator.classes_)
    card = CARD.format(
        name=MODEL_NAME,
        description=description,
        estimator=_describe(estimator),
        n_samples=len(y_train) + len(y_test),
        seed=SEED,
        sklearn_version=sklearn.__version__,
        n_features=len(feature_names),
        n_classes=len(estimator.classes_),
        features="\n".join(f"{i}. `{name}`" for i, name in enumerate(feature_names)),
        classes=classes,
        **numbers,
    )
    (folder / "README.md").write_text(card)
    return numbers


def _describe(estimator) -> str:
    steps = getattr(estimator, "steps", None)
    if steps:
        return " → ".join(type(step).__name__ for _, step in steps)
    return type(estimator).__name__


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repo", type=Path, default=ROOT / "model-repo", help="model repository")
    args = parser.parse_args()
    data = split()
    summary = [train_one(version, args.repo, data) for version in estimators()]
    for numbers in summary:
        print(
            f"version {numbers['version']} ({numbers['kind']}): held-out accuracy "
            f"{numbers['accuracy']:.4f} ({numbers['correct']}/{numbers['test_rows']}), "
            f"log loss {numbers['log_loss']:.4f}"
        )
    print("SUMMARY " + json.dumps({"model": MODEL_NAME, "seed": SEED, "versions": summary}))


if __name__ == "__main__":
    main()
