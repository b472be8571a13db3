"""ReportThread: the engine process's step outputs reach the pipe whole and in order."""

from __future__ import annotations

import multiprocessing
import select
import threading
from collections.abc import Iterator
from multiprocessing.connection import Connection

import pytest

from mlserver_streaming.events import FinishReason
from mlserver_streaming.text.core.messages import from_wire
from mlserver_streaming.text.core.step_output import StepOutput
from mlserver_streaming.text.drivers.child import ReportThread
from mlserver_streaming.text.drivers.pipe_frames import FrameReader
from mlserver_streaming.text.sample.generation import Delta


def step(i: int, text: str = "") -> StepOutput:
    out = StepOutput(running=1, step_done=True)
    out.add(7, Delta(text or f"t{i}", [i]))
    return out


def read_all(reader: FrameReader, fd: int, count: int) -> list[StepOutput]:
    got: list[StepOutput] = []
    while len(got) < count:
        assert select.select([fd], [], [], 5.0)[0], f"only {len(got)} of {count} reports came"
        reports, closed = reader.read()
        got += [from_wire(report) for report in reports]
        assert not closed or len(got) == count
    return got


def test_outputs_arrive_in_order_and_close_writes_what_is_queued() -> None:
    reader_end, writer_end = multiprocessing.Pipe(duplex=False)
    reader = FrameReader(reader_end.fileno())
    reports = ReportThread(writer_end.fileno())
    # Big ones too: more than the pipe holds, so the thread blocks until they are read.
    outs = [step(i, "x" * 100_000 if i % 4 == 0 else "") for i in range(12)]
    last = StepOutput()
    last.add(7, Delta("", [], finish_reason=FinishReason.CANCELLED))
    for out in [*outs, last]:
        reports.publish(out)
    closer = threading.Thread(target=reports.close)  # returns once all is written
    closer.start()
    got = read_all(reader, reader_end.fileno(), len(outs) + 1)
    closer.join(5.0)
    assert not closer.is_alive()
    assert [o.deltas[7].token_ids for o in got[:-1]] == [[i] for i in range(12)]
    assert got[4].deltas[7].text == "x" * 100_000
    assert got[-1].deltas[7].finish_reason is FinishReason.CANCELLED
    writer_end.close()
    reader_end.close()


@pytest.fixture
def on_a_pipe() -> Iterator[tuple[Connection, ReportThread, list[BaseException]]]:
    """A ReportThread writing to a pipe's end, the other end, and the failures it reported."""
    reader_end, writer_end = multiprocessing.Pipe(duplex=False)
    failures: list[BaseException] = []
    yield reader_end, ReportThread(writer_end.fileno(), on_failure=failures.append), failures
    writer_end.close()
    reader_end.close()


def test_a_report_that_cannot_be_written_goes_to_on_failure_and_stops_the_thread(
    on_a_pipe: tuple[Connection, ReportThread, list[BaseException]],
) -> None:
    reader_end, reports, failures = on_a_pipe
    bad = StepOutput()
    bad.add(1, Delta(lambda: None, [1]))  # type: ignore[arg-type]  # a lambda does not pickle
    reports.publish(bad)
    reports.publish(step(2))
    reports.close(5.0)
    assert len(failures) == 1 and "pickle" in repr(failures[0]).lower()
    assert not reader_end.poll(0.2)  # nothing after the failure was written


def test_a_gone_reader_is_not_a_failure(
    on_a_pipe: tuple[Connection, ReportThread, list[BaseException]],
) -> None:
    reader_end, reports, failures = on_a_pipe
    reader_end.close()  # the server's process exited: writes raise BrokenPipeError
    for i in range(3):
        reports.publish(step(i))
    reports.close(5.0)
    assert failures == []
