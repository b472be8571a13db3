"""A streamed HTTP response produced from the request body while the body still arrives.

Starlette's `StreamingResponse` (under uvicorn's ASGI 2.3) watches for a disconnect by
calling `receive()` in a task of its own, which would swallow the request body's messages.
Here one pump owns `receive()`: it queues the body's pieces for the producer, up to
`read_ahead` bytes (so a fast uploader is held back by TCP, never buffered without bound),
and after the body keeps listening, so a client that goes away cancels the producer (and
whatever it awaits: scoring, generation) at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Mapping

import anyio
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

READ_AHEAD_BYTES = 32 * 1024 * 1024
"""Request bytes received ahead of the producer: large enough that a client that sends the
whole upload before reading (httpx, browsers) is not slowed by the producer's pace."""

Producer = Callable[[AsyncIterator[bytes]], AsyncIterator[bytes]]
"""The response body, made from the request body's pieces."""


class BodyPump:
    """Moves the request body from ASGI `receive` into a bounded queue; flags disconnects."""

    def __init__(self, receive: Receive, read_ahead: int):
        self._receive = receive
        self._read_ahead = read_ahead
        self._pieces: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._buffered = 0
        self._drained = asyncio.Event()
        self.disconnected = False

    async def run(self, on_disconnect: Callable[[], None]) -> None:
        """Receive until the client disconnects (which calls `on_disconnect`)."""
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                self.disconnected = True
                self._pieces.put_nowait(None)
                on_disconnect()
                return
            if message["type"] != "http.request":
                continue
            body: bytes = message.get("body", b"")
            while self._buffered >= self._read_ahead:
                self._drained.clear()
                await self._drained.wait()
            self._buffered += len(body)
            self._pieces.put_nowait(body)
            if not message.get("more_body", False):
                self._pieces.put_nowait(None)

    async def pieces(self) -> AsyncIterator[bytes]:
        """The request body as it arrives, ending when it is complete."""
        while (piece := await self._pieces.get()) is not None:
            self._buffered -= len(piece)
            self._drained.set()
            if piece:
                yield piece
        if self.disconnected:
            raise ConnectionError("the client disconnected during the upload")


class DuplexStreamingResponse(Response):
    """`produce(request body pieces)` streamed back as the response body, both at once."""

    def __init__(
        self,
        produce: Producer,
        media_type: str = "text/event-stream",
        headers: Mapping[str, str] | None = None,
        read_ahead: int = READ_AHEAD_BYTES,
    ):
        self.status_code = 200
        self.media_type = media_type
        self.background = None
        self.init_headers(headers)
        self._produce = produce
        self._read_ahead = read_ahead

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        pump = BodyPump(receive, self._read_ahead)
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(pump.run, tasks.cancel_scope.cancel)
            await send(
                {
                    "type": "http.response.start",
                    "status": self.status_code,
                    "headers": self.raw_headers,
                }
            )
            chunks = self._produce(pump.pieces())
            async with contextlib.aclosing(chunks):  # type: ignore[type-var]
                async for chunk in chunks:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            tasks.cancel_scope.cancel()
