"""FrameReader: what Connection.send wrote, read back in one read per wake-up."""

from __future__ import annotations

import multiprocessing
import pickle
import struct

from mlserver_streaming.text.pipe_frames import FrameReader, split_frames


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
