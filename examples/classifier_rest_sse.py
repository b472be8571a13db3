"""Classify 20,000 rows over REST SSE and print each chunk as it arrives, with progress.

    python examples/classifier_rest_sse.py  # server on 127.0.0.1:8080 (MLSERVER_HTTP_PORT)

One request carries every row; `chunk_size` asks for an event per 2,000 rows. Every event
says which rows it holds (`offset`, `rows_done`, `rows_total`); the last one has
`final: true` and a `finish_reason` ("complete", or "error" with an `error` message).
"""

import json
import os
from collections import Counter

import httpx
import numpy as np
from httpx_sse import connect_sse
from sklearn.datasets import load_breast_cancer

HTTP_PORT = os.environ.get("MLSERVER_HTTP_PORT", "8080")
URL = f"http://127.0.0.1:{HTTP_PORT}/v2/models/tumor-classifier/infer_stream"
ROWS = 20_000


def main() -> None:
    data = load_breast_cancer().data
    rows = np.tile(data, (ROWS // len(data) + 1, 1))[:ROWS]
    request = {
        "inputs": [
            {
                "name": "features",
                "datatype": "FP64",
                "shape": list(rows.shape),
                "data": rows.ravel().tolist(),
            }
        ],
        "parameters": {"chunk_size": 2000},
    }
    with (
        httpx.Client(timeout=60) as client,
        connect_sse(client, "POST", URL, json=request) as events,
    ):
        for sse in events.iter_sse():
            event = json.loads(sse.data)
            params = event["parameters"]
            if params.get("finish_reason") == "error":
                raise SystemExit(f"error: {params['error']}")
            labels = next(o["data"] for o in event["outputs"] if o["name"] == "label")
            counts = Counter(labels)
            done, total = params["rows_done"], params["rows_total"]
            print(
                f"rows {params['offset']:>6}-{done - 1:<6} of {total} ({done / total:4.0%}): "
                f"{counts['benign']} benign, {counts['malignant']} malignant"
            )
            if params.get("final"):
                print(f"finished: {params['finish_reason']}")


if __name__ == "__main__":
    main()
