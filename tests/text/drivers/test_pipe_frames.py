"""FrameReader: what Connection.send wrote, read back in one read per wake-up."""

from __future__ import annotations

import asyncio
import multiprocessing
import pickle
import select
import struct
import threading

from mlserver_streaming.text.drivers.pipe_frames import (
    FrameReader,
    FrameWriter,
    QueuedFrameWriter,
    frame,
    split_frames,
)


def test_messages_of_any_size_come_back_in_order_then_eof() -> None:
    reader_end, writer_end = multiprocessing.Pipe(duplex=False)
    reader = FrameReader(reader_end.fileno())
    assert reader.read() == ([], False)  # nothing yet: no blocking
    messages = [("step", i, "x" * (40_000 if i == 2 else i)) for i in range(5)]
    for message in messages:  # the 40 kB one goes as two writes (header, then body)
        writer_end.send(message)
    got, closed = reader.read()
    while len(got) < len(messages):
        more, closed = reader.read()
        got += more
    assert got == messages and not closed
    writer_end.close()
    assert reader.read() == ([], True)
    reader_end.close()


def test_a_partial_frame_waits_for_the_rest() -> None:
    body = pickle.dumps({"deltas": [1, 2, 3]})
    frame = struct.pack("!i", len(body)) + body
    buffer = bytearray(frame + frame[:7])
    assert split_frames(buffer) == [{"deltas": [1, 2, 3]}]
    assert bytes(buffer) == frame[:7]
    buffer += frame[7:]
    assert split_frames(buffer) == [{"deltas": [1, 2, 3]}] and not buffer


def test_the_long_header_of_huge_messages() -> None:
    body = pickle.dumps("big")
    buffer = bytearray(struct.pack("!i", -1) + struct.pack("!Q", len(body)) + body)
    assert split_frames(buffer) == ["big"] and not buffer


def test_connection_reads_what_the_writer_wrote() -> None:
    reader_end, writer_end = multiprocessing.Pipe(duplex=False)
    writer = FrameWriter(writer_end.fileno())
    messages = [("report", 0, []), ("report", 1, "y" * 20_000), {"admitted": {3: 0.5}}]
    for message in messages:  # each fits in the pipe's buffer: no reader needed yet
        writer.send(message)
    assert [reader_end.recv() for _ in messages] == messages
    assert frame("x")[:4] == struct.pack("!i", len(pickle.dumps("x", pickle.HIGHEST_PROTOCOL)))
    writer_end.close()
    reader_end.close()


def test_messages_larger_than_the_pipe_go_whole_in_order() -> None:
    reader_end, writer_end = multiprocessing.Pipe(duplex=False)
    reader = FrameReader(reader_end.fileno())
    messages = [("step", i, "z" * (200_000 if i % 3 == 0 else i)) for i in range(9)]

    def send_all() -> None:  # a blocking writer: each big write waits for the reader
        writer = FrameWriter(writer_end.fileno())
        for message in messages:
            writer.send(message)

    sender = threading.Thread(target=send_all)
    sender.start()
    got: list = []
    while len(got) < len(messages):
        select.select([reader_end.fileno()], [], [], 5.0)
        more, closed = reader.read()
        assert not closed
        got += more
    sender.join(5.0)
    assert got == messages
    writer_end.close()
    assert reader.read() == ([], True)
    reader_end.close()


async def test_the_queued_writer_never_blocks_and_delivers_everything_in_order() -> None:
    reader_end, writer_end = multiprocessing.Pipe(duplex=False)
    gone: list[bool] = []
    loop = asyncio.get_running_loop()
    writer = QueuedFrameWriter(writer_end.fileno(), loop, lambda: gone.append(True))
    messages = [("submit", i, "p" * 100_000) for i in range(10)]  # 1 MB: far past the pipe
    for message in messages:
        writer.send(message)  # returns at once: nobody reads yet
    assert writer.pending > 0
    # The child reads with Connection.recv: every message whole, in order, as it drains.
    got = await asyncio.to_thread(lambda: [reader_end.recv() for _ in messages])
    assert got == messages
    while writer.pending:  # the last piece went out as the reader took it
        await asyncio.sleep(0)
    assert not gone
    writer.close()
    writer_end.close()
    reader_end.close()


async def test_the_queued_writer_says_when_the_reader_is_gone() -> None:
    reader_end, writer_end = multiprocessing.Pipe(duplex=False)
    gone: list[bool] = []
    loop = asyncio.get_running_loop()
    writer = QueuedFrameWriter(writer_end.fileno(), loop, lambda: gone.append(True))
    reader_end.close()
    writer.send(("submit", 1))
    assert gone == [True] and writer.pending == 0
    writer_end.close()
