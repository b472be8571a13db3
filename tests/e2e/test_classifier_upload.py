"""The CSV upload route (`POST /v2/models/{name}/classify_csv`) against a real server."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import numpy as np
import pytest
from httpx_sse import aconnect_sse
from sklearn.datasets import load_breast_cancer

from mlserver_streaming.classifier.runtime import PARAM_OFFSET, PARAM_ROWS_DONE, PARAM_ROWS_TOTAL
from mlserver_streaming.events import ERROR, FINAL, FINISH_REASON, FinishReason

from .clients import TIMEOUT, params_of
from .duplex import DuplexUpload

pytestmark = pytest.mark.e2e

MODEL = "tumor-classifier"
ROWS = load_breast_cancer().data  # 569 rows of 30 features


def csv_bytes(rows: np.ndarray, header: bool = True) -> bytes:
    """Rows as CSV text, with a header line of feature names."""
    lines = [",".join(f"f{i}" for i in range(rows.shape[1]))] if header else []
    lines += [",".join(repr(float(v)) for v in row) for row in rows]
    return ("\r\n".join(lines) + "\r\n").encode()


def labels_of(events: list[dict[str, Any]]) -> list[str]:
    """Every row's label over a stream's events, in order."""
    return [
        label for e in events for o in e["outputs"] if o["name"] == "label" for label in o["data"]
    ]


async def v2_labels(server, rows: np.ndarray, version: str | None = None) -> list[str]:
    """The same rows' labels through the unary V2 route."""
    path = f"/v2/models/{MODEL}" + (f"/versions/{version}" if version else "") + "/infer"
    body = {
        "inputs": [
            {
                "name": "features",
                "datatype": "FP64",
                "shape": list(rows.shape),
                "data": rows.ravel().tolist(),
            }
        ]
    }
    async with httpx.AsyncClient(base_url=server.http_url, timeout=TIMEOUT) as client:
        response = await client.post(path, json=body)
    response.raise_for_status()
    return labels_of([response.json()])


async def httpx_upload(server, path: str, pieces: list[bytes]) -> list[dict[str, Any]]:
    """Upload with httpx streaming a generator body; every event's JSON."""

    async def body() -> AsyncIterator[bytes]:
        for piece in pieces:
            yield piece

    async with (
        httpx.AsyncClient(base_url=server.http_url, timeout=TIMEOUT) as client,
        aconnect_sse(client, "POST", path, content=body()) as source,
    ):
        assert source.response.status_code == 200
        return [json.loads(sse.data) async for sse in source.aiter_sse()]


async def test_first_predictions_arrive_before_the_upload_is_finished(server) -> None:
    rows = np.tile(ROWS, (4, 1))[:2000]
    data = csv_bytes(rows)
    split = data.index(b"\n", len(data) // 3) + 1  # a third of the rows (> one chunk of 500)
    url = f"{server.http_url}/v2/models/{MODEL}/classify_csv?chunk_size=500&rows_total=2000"
    upload = await DuplexUpload.open(url)
    try:
        await upload.send(data[:split])
        events = upload.events()
        # The rest of the body is only sent once the first event is in: the route must answer
        # what it has, while the request is unfinished.
        first = await asyncio.wait_for(anext(events), timeout=20)
        assert upload.status == 200
        assert params_of(first) == {PARAM_OFFSET: 0, PARAM_ROWS_DONE: 500, PARAM_ROWS_TOTAL: 2000}
        await upload.send(data[split:])
        await upload.finish()
        rest = [e async for e in events]
    finally:
        await upload.close()
    final = params_of(rest[-1])
    assert final[FINAL] is True and final[FINISH_REASON] == FinishReason.COMPLETE
    assert final[PARAM_ROWS_DONE] == 2000
    assert [params_of(e)[PARAM_OFFSET] for e in [first, *rest]] == [0, 500, 1000, 1500]
    assert labels_of([first, *rest]) == await v2_labels(server, rows)


async def test_httpx_streamed_body_versioned_without_header(server) -> None:
    data = csv_bytes(ROWS, header=False)
    pieces = [data[i : i + 997] for i in range(0, len(data), 997)]  # lines split across pieces
    path = f"/v2/models/{MODEL}/versions/1/classify_csv?chunk_size=100"
    events = await httpx_upload(server, path, pieces)
    assert {e["model_version"] for e in events} == {"1"}
    assert [params_of(e)[PARAM_ROWS_DONE] for e in events] == [*range(100, 569, 100), 569]
    assert PARAM_ROWS_TOTAL not in params_of(events[-1])  # not stated by the client
    assert params_of(events[-1])[FINISH_REASON] == FinishReason.COMPLETE
    assert labels_of(events) == await v2_labels(server, ROWS, version="1")


async def test_bad_row_ends_the_stream_naming_its_line(server) -> None:
    good = csv_bytes(ROWS[:250])  # header + 250 rows: lines 1-251
    bad_row = ",".join(["1.0"] * 29) + ",oops\n"
    data = good + bad_row.encode() + csv_bytes(ROWS[:10], header=False)
    events = await httpx_upload(server, f"/v2/models/{MODEL}/classify_csv?chunk_size=100", [data])
    final = params_of(events[-1])
    assert final[FINISH_REASON] == FinishReason.ERROR
    assert final[ERROR] == "line 252: field 30 is not a number: 'oops'."
    answered = events[:-1]
    assert [params_of(e)[PARAM_ROWS_DONE] for e in answered] == [100, 200, 250]
    assert labels_of(answered) == await v2_labels(server, ROWS[:250])


async def test_a_body_without_line_breaks_ends_with_line_1s_error(server) -> None:
    url = f"{server.http_url}/v2/models/{MODEL}/classify_csv"
    piece, total = b"1" * 65536, 64 * 1024 * 1024  # 64 MiB without a line break
    upload = await DuplexUpload.open(url)
    sent = 0

    async def send_all() -> None:
        nonlocal sent
        while sent < total:
            await upload.send(piece)
            sent += len(piece)

    sending = asyncio.create_task(send_all())
    try:
        events = [e async for e in upload.events()]  # ends when the server ends the stream
    finally:
        sending.cancel()
        await asyncio.gather(sending, return_exceptions=True)  # the server stops reading
        await upload.close()
    assert upload.status == 200 and len(events) == 1
    final = params_of(events[0])
    assert final[FINISH_REASON] == FinishReason.ERROR
    # The parser refuses after 3,100 characters (tests/classifier/test_csv_stream.py); how
    # much the client got to send meanwhile is the sockets' buffering, not asserted here.
    assert final[ERROR].startswith("line 1: longer than 3100 characters")


async def test_wrong_column_count_and_rows_total_mismatch(server) -> None:
    short = csv_bytes(ROWS[:3], header=False) + b"1,2,3\n"
    events = await httpx_upload(server, f"/v2/models/{MODEL}/classify_csv", [short])
    assert params_of(events[-1])[ERROR] == "line 4: expected 30 comma-separated numbers, got 3."
    assert labels_of(events) == await v2_labels(server, ROWS[:3])
    events = await httpx_upload(
        server, f"/v2/models/{MODEL}/classify_csv?rows_total=5", [csv_bytes(ROWS[:3])]
    )
    assert params_of(events[-1])[ERROR] == "rows_total is 5, the upload had 3 rows."
    assert len(labels_of(events)) == 3


@pytest.mark.parametrize(
    ("path", "status", "message"),
    [
        ("/v2/models/nope/classify_csv", 404, "Model nope not found"),
        (f"/v2/models/{MODEL}/versions/9/classify_csv", 404, f"Model {MODEL} with version 9"),
        (f"/v2/models/{MODEL}/classify_csv?chunk=5", 400, "unknown parameter 'chunk'"),
        (f"/v2/models/{MODEL}/classify_csv?header=maybe", 400, "header must be one of"),
        (f"/v2/models/{MODEL}/classify_csv?chunk_size=0", 400, "chunk_size must be in"),
    ],
    ids=["unknown-model", "unknown-version", "unknown-parameter", "bad-header", "bad-chunk"],
)
async def test_refused_before_the_stream(server, path: str, status: int, message: str) -> None:
    async with httpx.AsyncClient(base_url=server.http_url, timeout=TIMEOUT) as client:
        response = await client.post(path, content=csv_bytes(ROWS[:2]))
    assert response.status_code == status
    assert message in response.json()["error"]


async def test_classifier_list(server) -> None:
    async with httpx.AsyncClient(base_url=server.http_url, timeout=TIMEOUT) as client:
        listed = (await client.get("/v2/classifiers")).json()["classifiers"]
    mine = [(c["name"], c["version"]) for c in listed if c["name"] == MODEL]
    assert mine == [(MODEL, "1"), (MODEL, "2")]
    assert listed[0]["features"] == 30 and listed[0]["classes"] == ["benign", "malignant"]
