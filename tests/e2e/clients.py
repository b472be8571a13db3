"""Small REST SSE and gRPC client helpers shared by the end-to-end tests."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import grpc
import httpx
import mlserver.grpc.dataplane_pb2_grpc as dataplane
from httpx_sse import aconnect_sse
from mlserver.grpc import converters
from mlserver.types import InferenceRequest, InferenceResponse

from .engines import holds

TIMEOUT = httpx.Timeout(60.0, connect=5.0)


def params_of(response: InferenceResponse | dict[str, Any]) -> dict[str, Any]:
    """The model's parameters of an event (without MLServer's headers), from types or JSON."""
    if isinstance(response, dict):
        params = response.get("parameters") or {}
    else:
        params = response.parameters.model_dump(exclude_none=True) if response.parameters else {}
    return {k: v for k, v in params.items() if k not in ("headers", "content_type")}


async def sse_events(base_url: str, path: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    """POST a request to an SSE endpoint and collect every event's JSON."""
    async with (
        httpx.AsyncClient(base_url=base_url, timeout=TIMEOUT) as client,
        aconnect_sse(client, "POST", path, json=body) as source,
    ):
        source.response.raise_for_status()
        return [json.loads(sse.data) async for sse in source.aiter_sse()]


class BackgroundReader:
    """A response read by a task of its own into `got`, so a test can wait for some of it,
    then act while the response is still open."""

    WAIT_S = 60.0
    task: asyncio.Future

    @property
    def got(self) -> list[Any]:
        """What has arrived so far."""
        raise NotImplementedError

    async def until(self, condition: Callable[[], object], what: str) -> None:
        """Wait for `condition()` (maybe async); fail if the response ends first or it
        never holds."""
        try:
            async with asyncio.timeout(self.WAIT_S):
                while not await holds(condition):
                    if self.task.done():
                        await self.task  # raises if reading failed
                        raise AssertionError(f"the stream ended before {what}: {self.got}")
                    await asyncio.sleep(0.01)
        except TimeoutError:
            raise AssertionError(f"not within {self.WAIT_S} s: {what}") from None

    async def disconnect(self) -> list[Any]:
        """Close the connection now (the server sees the client leave); what came so far."""
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        return self.got


class SSEReader(BackgroundReader):
    """An SSE stream read in the background: each event's JSON as it arrives."""

    def __init__(self, base_url: str, path: str, body: dict[str, Any] | None = None) -> None:
        self.events: list[dict[str, Any]] = []
        self.task = asyncio.ensure_future(self._read(base_url, path, body))

    @property
    def got(self) -> list[Any]:
        return self.events

    async def _read(self, base_url: str, path: str, body: dict[str, Any] | None):
        async with (
            httpx.AsyncClient(base_url=base_url, timeout=TIMEOUT) as client,
            aconnect_sse(client, "POST", path, json=body) as source,
        ):
            source.response.raise_for_status()
            async for sse in source.aiter_sse():
                self.events.append(json.loads(sse.data))
        return self.events

    def has(self, count: int) -> Callable[[], bool]:
        """A condition: `count` events (or the stream's end) have arrived."""
        return lambda: len(self.events) >= count or self.task.done()

    async def result(self) -> list[dict[str, Any]]:
        """Every event, once the stream has ended."""
        return await self.task


class LineReader(BackgroundReader):
    """A POSTed SSE response read in the background as raw lines (comments included, empty
    lines left out), for the OpenAI routes."""

    def __init__(self, base_url: str, path: str, body: dict[str, Any]) -> None:
        self.lines: list[str] = []
        self.status: int | None = None
        self.task = asyncio.ensure_future(self._read(base_url, path, body))

    @property
    def got(self) -> list[Any]:
        return self.lines

    async def _read(self, base_url: str, path: str, body: dict[str, Any]) -> list[str]:
        async with (
            httpx.AsyncClient(base_url=base_url, timeout=TIMEOUT) as client,
            client.stream("POST", path, json=body) as response,
        ):
            self.status = response.status_code
            async for line in response.aiter_lines():
                if line:
                    self.lines.append(line)
        return self.lines

    def data(self) -> list[str]:
        """The `data: ` lines so far."""
        return [line for line in self.lines if line.startswith("data: ")]

    def has_data(self, count: int) -> Callable[[], bool]:
        """A condition: `count` data lines (or the response's end) have arrived."""
        return lambda: len(self.data()) >= count or self.task.done()

    async def result(self) -> list[str]:
        """Every line, once the response has ended with status 200."""
        lines = await self.task
        assert self.status == 200
        return lines


async def stream_opened(base_url: str, stream_id: str) -> bool:
    """Whether the server has opened (admitted) the stream `stream_id`: its GET route
    answers 200 (its events follow; the connection is dropped unread) rather than 404."""
    async with (
        httpx.AsyncClient(base_url=base_url, timeout=TIMEOUT) as client,
        client.stream("GET", f"/v2/streams/{stream_id}") as response,
    ):
        return response.status_code == 200


def to_grpc(request: InferenceRequest | dict[str, Any], model: str, version: str | None = None):
    """A V2 request (types or JSON) as a gRPC ModelInferRequest."""
    if isinstance(request, dict):
        request = InferenceRequest.model_validate(request)
    for tensor in request.inputs:
        if tensor.datatype == "BYTES":  # gRPC's bytes_contents wants bytes, not str
            tensor.data.root = [v.encode() if isinstance(v, str) else v for v in tensor.data.root]
    return converters.ModelInferRequestConverter.from_types(
        request, model_name=model, model_version=version
    )


def from_grpc(response) -> InferenceResponse:
    """A gRPC ModelInferResponse as V2 types."""
    return converters.ModelInferResponseConverter.to_types(response)


async def grpc_stream(
    target: str, requests: Iterable[Any], timeout: float = 60.0
) -> list[InferenceResponse]:
    """Send gRPC requests on one ModelStreamInfer call and collect every response."""

    async def gen() -> AsyncIterator[Any]:
        for request in requests:
            yield request

    async with grpc.aio.insecure_channel(target) as channel:
        stub = dataplane.GRPCInferenceServiceStub(channel)
        call = stub.ModelStreamInfer(gen(), timeout=timeout)
        return [from_grpc(r) async for r in call]


async def grpc_infer(target: str, request: Any, timeout: float = 60.0) -> InferenceResponse:
    """One unary ModelInfer call."""
    async with grpc.aio.insecure_channel(target) as channel:
        stub = dataplane.GRPCInferenceServiceStub(channel)
        return from_grpc(await stub.ModelInfer(request, timeout=timeout))


async def metric(server, name: str, **labels: str) -> float:
    """The sum of a Prometheus metric's samples whose labels include `labels`."""
    async with httpx.AsyncClient(timeout=TIMEOUT) as client:
        text = (await client.get(server.metrics_url)).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total
