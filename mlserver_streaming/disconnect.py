"""Unary work that stops when its client goes away (vLLM's `with_cancellation`).

A streamed response notices a gone client when it next writes; a unary one writes only at
the end, so without this a request whose client left holds its slot to `max_tokens`. Once
the body is read, the only ASGI message left for the request is `http.disconnect`: a
watcher waits for it and cancels the work.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from starlette.requests import Request

T = TypeVar("T")


class ClientGone(Exception):
    """The client disconnected before the work was done (the work was cancelled)."""


async def unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """`work`'s result; cancelled with ClientGone if the client disconnects first."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.create_task(_disconnect(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if not task.done():
            raise ClientGone()
        return task.result()
    finally:
        watcher.cancel()
        task.cancel()


async def _disconnect(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass
