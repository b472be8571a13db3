"""A full-duplex HTTP/1.1 client: reads the SSE response while the request body is still sent.

httpx (like browsers' fetch) sends the whole request body before it reads a byte of the
response, so it cannot show that the CSV upload route answers mid-upload. HTTP/1.1 itself
allows it: this client writes a chunked body on one side of the socket and parses the
chunked SSE response on the other. Just enough HTTP for our own server, for tests and
benchmarks.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit


class DuplexUpload:
    """One POST whose body is written piece by piece while its events are read."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self._reader, self._writer = reader, writer
        self.status = 0

    @classmethod
    async def open(cls, url: str, content_type: str = "text/csv") -> DuplexUpload:
        """Connect and send the request head (the body follows through `send`)."""
        parts = urlsplit(url)
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        head = (
            f"POST {target} HTTP/1.1\r\nhost: {parts.netloc}\r\ncontent-type: {content_type}\r\n"
            "transfer-encoding: chunked\r\naccept: text/event-stream\r\n\r\n"
        )
        writer.write(head.encode())
        await writer.drain()
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        """One piece of the body."""
        if data:
            self._writer.write(b"%x\r\n%s\r\n" % (len(data), data))
            await self._writer.drain()

    async def finish(self) -> None:
        """The end of the body."""
        self._writer.write(b"0\r\n\r\n")
        await self._writer.drain()

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        """The JSON of each `data:` event of the response, as it arrives."""
        status_line = await self._reader.readline()
        self.status = int(status_line.split()[1])
        while (await self._reader.readline()) not in (b"\r\n", b""):
            pass  # headers: our server always answers a stream with chunked encoding
        buffer = b""
        while True:
            size = int((await self._reader.readline()).strip() or b"0", 16)
            if size == 0:
                break
            buffer += await self._reader.readexactly(size)
            await self._reader.readexactly(2)
            while b"\n\n" in buffer:
                block, buffer = buffer.split(b"\n\n", 1)
                if block.startswith(b"data: "):
                    yield json.loads(block[6:])

    async def close(self) -> None:
        """Close the connection (a disconnect, if the response is still running)."""
        self._writer.close()
        await self._writer.wait_closed()
