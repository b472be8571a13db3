"""Streaming classifier throughput: streamed vs unary, and micro-batching on vs off.

Starts its own `mlserver start` on free 127.0.0.1 ports, serving the tumor classifier's
artifact (default: version 2, the boosted trees) twice: with micro-batching (the
model-repo settings) and without (`max_batch_size: 1`).

1. One batch of `--rows` rows (the dataset tiled, sent as FP64 as it comes) answered
   unary vs streamed in chunks of `--chunk-size`, over REST/SSE and gRPC, plus a gRPC
   bidi call that streams the same rows in as requests of `--chunk-size` rows, plus the
   same rows as a CSV upload to `/classify_csv` (read and scored while it arrives), sent
   by httpx streaming a generator body (httpx reads the response only once the body is
   sent) and by a full-duplex client (tests/e2e/duplex.py): rows/s and time to the first
   chunk.
2. `--streams` concurrent gRPC bidi streams, each sending single-row requests one after
   another (the next once the previous is answered): rows/s with micro-batching on vs off.

Every figure is the median of `--runs` runs. Writes benchmarks/results/classifier.json and
prints a markdown table.

    python benchmarks/bench_classifier.py                 # about 1–2 minutes on 2 cores
    python benchmarks/bench_classifier.py --runs 5 --version 1
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import grpc
import httpx
import mlserver.grpc.dataplane_pb2 as pb
import mlserver.grpc.dataplane_pb2_grpc as dataplane
import numpy as np
import orjson
from common import MODEL_REPO, ROOT, median, served, write_results
from httpx_sse import aconnect_sse
from sklearn.datasets import load_breast_cancer

from tests.e2e.duplex import DuplexUpload

BATCHED, UNBATCHED = "bench-batched", "bench-unbatched"
MAX_MESSAGE = 512 * 1024 * 1024
GRPC_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE),
    ("grpc.max_receive_message_length", MAX_MESSAGE),
]
Timing = tuple[float, float]  # (seconds to the first answer, seconds to the last)


def bench_repo(folder: Path, version: str) -> Path:
    """A repo with the artifact served twice: micro-batching on and off."""
    source = MODEL_REPO / "tumor-classifier" / version
    settings = json.loads((source / "model-settings.json").read_text())
    extra = settings["parameters"]["extra"]
    server = json.loads((ROOT / "settings.json").read_text())
    (folder / "settings.json").write_text(
        json.dumps({**server, "grpc_max_message_length": MAX_MESSAGE})
    )
    for name, batching in ((BATCHED, {}), (UNBATCHED, {"max_batch_size": 1})):
        (folder / name).mkdir()
        parameters = {"uri": str(source / "model.joblib"), "extra": {**extra, **batching}}
        document = {**settings, "name": name, "parameters": parameters}
        (folder / name / "model-settings.json").write_text(json.dumps(document))
    return folder


def dataset_rows(n: int) -> np.ndarray:
    data = load_breast_cancer().data
    return np.tile(data, (n // len(data) + 1, 1))[:n]


def rest_body(rows: np.ndarray, chunk_size: int) -> bytes:
    tensor = {"name": "features", "datatype": "FP64", "shape": list(rows.shape)}
    body = {"inputs": [{**tensor, "data": rows.ravel().tolist()}], "parameters": {}}
    body["parameters"]["chunk_size"] = chunk_size
    return orjson.dumps(body)


def grpc_request(model: str, rows: np.ndarray, chunk_size: int) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=model)
    request.parameters["chunk_size"].int64_param = chunk_size
    tensor = request.inputs.add(name="features", datatype="FP64", shape=list(rows.shape))
    tensor.contents.fp64_contents.extend(rows.ravel().tolist())
    return request


async def rest_unary(http: httpx.AsyncClient, body: bytes) -> Timing:
    start = time.perf_counter()
    response = await http.post(f"/v2/models/{BATCHED}/infer", content=body, headers=JSON)
    response.raise_for_status()
    response.json()
    done = time.perf_counter() - start
    return done, done


async def rest_sse(http: httpx.AsyncClient, body: bytes) -> Timing:
    start, first = time.perf_counter(), None
    path = f"/v2/models/{BATCHED}/infer_stream"
    async with aconnect_sse(http, "POST", path, content=body, headers=JSON) as source:
        async for sse in source.aiter_sse():
            orjson.loads(sse.data)
            first = first or time.perf_counter() - start
    assert first is not None
    return first, time.perf_counter() - start


CSV_PIECE = 64 * 1024  # bytes per piece of the streamed upload body


def csv_body(rows: np.ndarray) -> bytes:
    """The rows as CSV text (a header line, then one line per row)."""
    lines = [",".join(f"f{i}" for i in range(rows.shape[1]))]
    lines += [",".join(map(repr, row)) for row in rows.tolist()]
    return ("\n".join(lines) + "\n").encode()


def csv_path(rows: int, chunk_size: int) -> str:
    return f"/v2/models/{BATCHED}/classify_csv?chunk_size={chunk_size}&rows_total={rows}"


async def csv_httpx(http: httpx.AsyncClient, body: bytes, path: str) -> Timing:
    """The upload as httpx sends it: a streamed generator body, then the response."""

    async def pieces() -> AsyncIterator[bytes]:
        for i in range(0, len(body), CSV_PIECE):
            yield body[i : i + CSV_PIECE]

    start, first = time.perf_counter(), None
    async with aconnect_sse(http, "POST", path, content=pieces()) as source:
        async for sse in source.aiter_sse():
            orjson.loads(sse.data)
            first = first or time.perf_counter() - start
    assert first is not None
    return first, time.perf_counter() - start


async def csv_duplex(base_url: str, body: bytes, path: str) -> Timing:
    """The upload from a client that reads the events while it is still sending."""
    start, first = time.perf_counter(), None
    upload = await DuplexUpload.open(base_url + path)

    async def send() -> None:
        for i in range(0, len(body), CSV_PIECE):
            await upload.send(body[i : i + CSV_PIECE])
        await upload.finish()

    sender = asyncio.create_task(send())
    try:
        async for _ in upload.events():
            first = first or time.perf_counter() - start
        await sender
    finally:
        await upload.close()
    assert first is not None
    return first, time.perf_counter() - start


async def grpc_calls(stub, requests: list[pb.ModelInferRequest], unary: bool) -> Timing:
    """One ModelInfer call, or one ModelStreamInfer call carrying every request."""
    start = time.perf_counter()
    if unary:
        await stub.ModelInfer(requests[0])
        done = time.perf_counter() - start
        return done, done

    async def send() -> AsyncIterator[pb.ModelInferRequest]:
        for request in requests:
            yield request

    first = None
    async for _ in stub.ModelStreamInfer(send()):
        first = first or time.perf_counter() - start
    assert first is not None
    return first, time.perf_counter() - start


JSON = {"content-type": "application/json"}


async def big_batch(server, rows: np.ndarray, chunk: int, runs: int) -> list[dict]:
    """Rows/s and time to first chunk of one big batch, unary vs streamed."""
    body = rest_body(rows, chunk)
    csv, upload_path = csv_body(rows), csv_path(len(rows), chunk)
    whole = [grpc_request(BATCHED, rows, chunk)]
    pieces = [grpc_request(BATCHED, rows[i : i + chunk], chunk) for i in range(0, len(rows), chunk)]
    async with (
        httpx.AsyncClient(base_url=server.http_url, timeout=300) as http,
        grpc.aio.insecure_channel(server.grpc_target, options=GRPC_OPTIONS) as channel,
    ):
        stub = dataplane.GRPCInferenceServiceStub(channel)
        cases: dict[str, Callable[[], Awaitable[Timing]]] = {
            "REST unary (/infer)": lambda: rest_unary(http, body),
            "REST SSE (/infer_stream)": lambda: rest_sse(http, body),
            "REST CSV upload, httpx (/classify_csv)": lambda: csv_httpx(http, csv, upload_path),
            "REST CSV upload, full duplex (/classify_csv)": lambda: csv_duplex(
                server.http_url, csv, upload_path
            ),
            "gRPC unary (ModelInfer)": lambda: grpc_calls(stub, whole, unary=True),
            "gRPC stream, 1 request": lambda: grpc_calls(stub, whole, unary=False),
            f"gRPC bidi, {len(pieces)} requests of {chunk}": lambda: grpc_calls(
                stub, pieces, unary=False
            ),
        }
        timings: dict[str, list[Timing]] = {name: [] for name in cases}
        for _ in range(runs):
            for name, case in cases.items():  # interleaved, so drift hits every case alike
                timings[name].append(await case())
    return [_summary(name, len(rows), runs) for name, runs in timings.items()]


def _summary(name: str, rows: int, timings: list[Timing]) -> dict:
    total = median([t for _, t in timings])
    first = median([f for f, _ in timings])
    return {
        "case": name,
        "rows": rows,
        "seconds": round(total, 3),
        "rows_per_s": round(rows / total),
        "first_chunk_s": round(first, 3),
        "first_chunk_share": round(first / total, 3),
    }


async def single_row_streams(
    target: str, model: str, streams: int, per_stream: int, rows: np.ndarray
) -> float:
    """Rows/s of `streams` bidi calls, each sending one row at a time, waiting for each answer."""
    requests = [grpc_request(model, rows[i : i + 1], 1) for i in range(per_stream)]

    async def one_stream(stub) -> None:
        call = stub.ModelStreamInfer()
        for request in requests:
            await call.write(request)
            await call.read()
        await call.done_writing()
        assert await call.read() is grpc.aio.EOF

    async with grpc.aio.insecure_channel(target, options=GRPC_OPTIONS) as channel:
        stub = dataplane.GRPCInferenceServiceStub(channel)
        await asyncio.gather(*(one_stream(stub) for _ in range(2)))  # warm up
        start = time.perf_counter()
        await asyncio.gather(*(one_stream(stub) for _ in range(streams)))
        return streams * per_stream / (time.perf_counter() - start)


async def batching(server, streams: int, per_stream: int, runs: int) -> list[dict]:
    rows = dataset_rows(per_stream)
    results = {BATCHED: [], UNBATCHED: []}  # type: dict[str, list[float]]
    for _ in range(runs):
        for model in results:
            results[model].append(
                await single_row_streams(server.grpc_target, model, streams, per_stream, rows)
            )
    return [
        {
            "case": f"{streams} gRPC streams × {per_stream} single-row requests, "
            f"micro-batching {'on' if model == BATCHED else 'off'}",
            "rows_per_s": round(median(values)),
            "runs_rows_per_s": [round(v) for v in values],
        }
        for model, values in results.items()
    ]


def table(big: list[dict], batch: list[dict]) -> str:
    unary = {r["case"].split(" ")[0]: r["rows_per_s"] for r in big if "unary" in r["case"]}
    lines = [
        "| case | rows/s | vs unary | first chunk | first chunk / total |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for r in big:
        ratio = r["rows_per_s"] / unary[r["case"].split(" ")[0]]
        lines.append(
            f"| {r['case']} | {r['rows_per_s']:,} | {ratio:.2f}× | "
            f"{r['first_chunk_s'] * 1000:.0f} ms | {r['first_chunk_share']:.1%} |"
        )
    lines += ["", "| case | rows/s | speed-up |", "| --- | ---: | ---: |"]
    off = batch[1]["rows_per_s"]
    lines += [
        f"| {r['case']} | {r['rows_per_s']:,} | {r['rows_per_s'] / off:.1f}× |" for r in batch
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=100_000, help="rows of the big batch")
    parser.add_argument("--chunk-size", type=int, default=1000, help="rows per streamed chunk")
    parser.add_argument("--streams", type=int, default=64, help="concurrent single-row streams")
    parser.add_argument("--per-stream", type=int, default=20, help="requests per stream")
    parser.add_argument("--runs", type=int, default=3, help="runs per case (median reported)")
    parser.add_argument("--version", default="2", help="tumor-classifier version to serve")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        repo = bench_repo(Path(tmp), args.version)
        with served([BATCHED, UNBATCHED], repo) as server:
            big = asyncio.run(
                big_batch(server, dataset_rows(args.rows), args.chunk_size, args.runs)
            )
            batch = asyncio.run(batching(server, args.streams, args.per_stream, args.runs))
    path = write_results("classifier", {"args": vars(args), "big_batch": big, "batching": batch})
    print(table(big, batch))
    print(f"\nwritten to {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
