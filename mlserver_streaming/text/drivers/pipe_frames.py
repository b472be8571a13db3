"""The engine process's reports on their pipe: one `write` per report, one `read` per wake-up.

`multiprocessing.Connection.recv` costs a `poll` and two `read`s per message (its header,
then its body), and the loop asks `poll` once more to learn that nothing is left: four
system calls per step at one stream. Here the pipe is non-blocking and everything waiting
comes in one `os.read`. The frames are `Connection.send`'s own (a 4-byte big-endian length,
or -1 then an 8-byte one, then the pickle), so a `Connection` may write them too (the
child's Ready); `FrameWriter` writes them with `pickle.dumps` and one `os.write`, where
`Connection.send` builds a `ForkingPickler` per message (after a llama.cpp step, with the
interpreter's caches cold, a report cost ~30 µs besides its write at one stream; ~15 now).
"""

from __future__ import annotations

import asyncio
import os
import pickle
import struct
from collections.abc import Callable
from typing import Any

READ_SIZE = 1 << 16


def split_frames(buffer: bytearray) -> list[Any]:
    """Unpickle the complete frames at the front of `buffer` and remove them from it; a
    partial frame stays for the next read."""
    messages, at, end = [], 0, len(buffer)
    while end - at >= 4:
        (size,) = struct.unpack_from("!i", buffer, at)
        head = 4
        if size == -1:  # Connection's header for a message of 2 GiB or more
            if end - at < 12:
                break
            (size,) = struct.unpack_from("!Q", buffer, at + 4)
            head = 12
        if end - at - head < size:
            break
        messages.append(pickle.loads(bytes(buffer[at + head : at + head + size])))
        at += head + size
    del buffer[:at]
    return messages


def frame(message: Any) -> bytes:
    """`message` pickled, behind Connection's header."""
    body = pickle.dumps(message, pickle.HIGHEST_PROTOCOL)
    size = len(body)
    head = struct.pack("!i", size) if size <= 0x7FFFFFFF else struct.pack("!iQ", -1, size)
    return head + body


class FrameWriter:
    """Writes messages to a blocking pipe as frames `FrameReader` (or a Connection) reads."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def send(self, message: Any) -> None:
        """Write one message whole (OSError once the reader is gone)."""
        data = memoryview(frame(message))
        while data:
            data = data[os.write(self._fd, data) :]


class QueuedFrameWriter:
    """Writes frames to a pipe from an event loop without ever blocking it: what the pipe
    cannot take now waits in a buffer, written as the reader drains the pipe
    (`add_writer`). A burst of long prompts (a Submit each, n per OpenAI request) while the
    engine is in a step would otherwise hold the loop, and every stream, on a full pipe."""

    def __init__(self, fd: int, loop: asyncio.AbstractEventLoop, gone: Callable[[], None]):
        os.set_blocking(fd, False)
        self._fd, self._loop, self._gone = fd, loop, gone
        self._pending = bytearray()

    @property
    def pending(self) -> int:
        """Bytes written by `send` that the pipe has not taken yet."""
        return len(self._pending)

    def send(self, message: Any) -> None:
        """Queue one message whole; it goes out in order. `gone` is called once the reader
        has closed its end."""
        was_idle = not self._pending
        self._pending += frame(message)
        if was_idle:
            self._flush()
            if self._pending:
                self._loop.add_writer(self._fd, self._flush)

    def _flush(self) -> None:
        try:
            while self._pending:
                self._pending = self._pending[os.write(self._fd, self._pending) :]
        except BlockingIOError:
            return
        except OSError:
            self._pending.clear()
            self.close()
            self._gone()
            return
        self._loop.remove_writer(self._fd)

    def close(self) -> None:
        """Stop writing (what waits is dropped: the reader is gone or stopping)."""
        self._loop.remove_writer(self._fd)


class FrameReader:
    """The messages a `Connection` wrote to the other end of a pipe, read without blocking."""

    def __init__(self, fd: int) -> None:
        os.set_blocking(fd, False)
        self._fd = fd
        self._buffer = bytearray()

    def read(self) -> tuple[list[Any], bool]:
        """The messages complete so far, and whether the writer has closed its end."""
        closed = False
        while True:
            try:
                chunk = os.read(self._fd, READ_SIZE)
            except BlockingIOError:
                break
            if not chunk:
                closed = True
                break
            self._buffer += chunk
            if len(chunk) < READ_SIZE:  # the pipe is empty: no read to learn it again
                break
        return split_frames(self._buffer), closed
