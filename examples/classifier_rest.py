"""Classify five tumours with one unary REST request to the tumor classifier.

    python examples/classifier_rest.py      # server on 127.0.0.1:8080 (MLSERVER_HTTP_PORT)

The rows come from scikit-learn's bundled breast-cancer dataset, so the true diagnosis
is printed next to the model's.
"""

import os

import httpx
from sklearn.datasets import load_breast_cancer

HTTP_PORT = os.environ.get("MLSERVER_HTTP_PORT", "8080")
FIRST, COUNT = 17, 5  # dataset rows 17-21: two malignant, three benign
URL = f"http://127.0.0.1:{HTTP_PORT}/v2/models/tumor-classifier/infer"


def main() -> None:
    data = load_breast_cancer()
    rows = data.data[FIRST : FIRST + COUNT]
    request = {
        "inputs": [
            {
                "name": "features",
                "datatype": "FP64",
                "shape": list(rows.shape),
                "data": rows.ravel().tolist(),
            }
        ]
    }
    response = httpx.post(URL, json=request, timeout=30)
    response.raise_for_status()
    answer = response.json()
    outputs = {output["name"]: output["data"] for output in answer["outputs"]}
    print(f"{answer['model_name']} version {answer['model_version']}")
    predictions = zip(outputs["label"], outputs["confidence"], strict=True)
    for i, (label, confidence) in enumerate(predictions, start=FIRST):
        truth = data.target_names[data.target[i]]
        print(f"row {i}: {label} (confidence {confidence:.3f}), diagnosed {truth}")


if __name__ == "__main__":
    main()
