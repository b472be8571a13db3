"""Server-sent events: framing, keep-alive comments and the streamed response, for every SSE
route (the V2 stream routes and the OpenAI routes).

While a stream is silent for `keepalive_interval()` seconds (a request queued behind
others, a slow first token), a `: keep-alive` comment goes out: clients ignore it, and
proxies with idle timeouts count it as traffic. MLServer's own `/infer_stream` route has
no keep-alives; it is not ours to change.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.responses import StreamingResponse

logger = logging.getLogger(__name__)

KEEPALIVE_ENV = "MLSERVER_STREAMING_SSE_KEEPALIVE_S"
"""Seconds of silence before a `: keep-alive` comment; 0 switches them off."""
DEFAULT_KEEPALIVE_S = 15.0

KEEPALIVE = b": keep-alive\n\n"
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
"""No caching, and no buffering in nginx-style proxies (each event leaves at once)."""
MEDIA_TYPE = "text/event-stream"


def keepalive_interval() -> float | None:
    """The keep-alive interval from the environment (None: off)."""
    raw = os.environ.get(KEEPALIVE_ENV, "")
    try:
        seconds = float(raw) if raw.strip() else DEFAULT_KEEPALIVE_S
    except ValueError:
        logger.warning("%s=%r is not a number; using %s", KEEPALIVE_ENV, raw, DEFAULT_KEEPALIVE_S)
        seconds = DEFAULT_KEEPALIVE_S
    return seconds if seconds > 0 else None


def data_event(obj: Any) -> bytes:
    """One event whose data is `obj` as JSON."""
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def id_event(event_id: int, data: bytes) -> bytes:
    """One event with an id (what an EventSource sends back as `Last-Event-ID`)."""
    return b"id: %d\ndata: %s\n\n" % (event_id, data)


_END = object()
READ_AHEAD = 16
"""Events read ahead of a slow client at most; past it the reader waits (back-pressure)."""


async def with_keepalive(lines: AsyncIterator[bytes], every: float | None) -> AsyncIterator[bytes]:
    """`lines`, with a keep-alive comment after each `every` seconds without a line.

    One task reads `lines` into a short queue; one timer, re-armed from the time of the
    last line sent, puts a keep-alive in when the writer has waited `every` seconds, so an
    event costs a queue hand-over and no timer of its own. Leaving early closes `lines`."""
    if every is None:
        async for line in lines:
            yield line
        return
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=READ_AHEAD)
    reader = asyncio.create_task(_read_into(lines, queue))
    last = loop.time()
    timer: asyncio.TimerHandle

    def tick() -> None:
        nonlocal timer
        now = loop.time()
        if queue.empty() and now - last >= every:  # the writer waits: wake it with a comment
            queue.put_nowait(KEEPALIVE)
        # Due `every` after the last line sent (a line queued now is sent at once).
        timer = loop.call_at(last + every if queue.empty() else now + every, tick)

    timer = loop.call_at(last + every, tick)
    try:
        while (item := await queue.get()) is not _END:
            if isinstance(item, BaseException):
                raise item
            last = loop.time()
            yield item
    finally:
        timer.cancel()
        reader.cancel()


async def _read_into(lines: AsyncIterator[bytes], queue: asyncio.Queue[Any]) -> None:
    # Closed here whatever happens: cancelled while waiting on a full queue (the client
    # left), `lines` would otherwise keep its cleanup (cancelling a generation) for the GC.
    async with contextlib.aclosing(lines):  # type: ignore[type-var]
        try:
            async for line in lines:
                await queue.put(line)
        except Exception as err:  # noqa: BLE001 - re-raised on the writer's side
            await queue.put(err)
            return
        await queue.put(_END)


def sse_response(lines: AsyncIterator[bytes]) -> StreamingResponse:
    """The streamed response of an SSE route, with keep-alives while `lines` is silent."""
    return StreamingResponse(
        with_keepalive(lines, keepalive_interval()), media_type=MEDIA_TYPE, headers=HEADERS
    )
