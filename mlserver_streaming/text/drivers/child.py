"""The engine process's side: build the core, say Ready, then run the engine loop over pipes.

It runs on the child's main thread; when idle it blocks on the command pipe, when busy it
drains pending commands between steps and between a decode's layers. Step outputs are
pickled and written by a thread of their own (`ReportThread`), in order, while the main
thread goes on into the next step: llama.cpp's decode releases the GIL, so the write that
wakes MLServer's process no longer sits between two decodes (one stream on shakespeare-gguf:
3–5% more tokens/s).
"""

from __future__ import annotations

import gc
import logging
import os
import queue
import select
import signal
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection

from ..core.engine_core import EngineSpec, build_core, run_engine_loop
from ..core.messages import Command, Failed, Ready, Stop, to_wire
from ..core.step_output import StepOutput
from .pipe_frames import FrameWriter

logger = logging.getLogger(__name__)


class _PipeInbox:
    """Commands from the server's process; a `Stop` once its end of the pipe is gone."""

    def __init__(self, commands: Connection) -> None:
        self._commands = commands
        # One poll object for the process: Connection.poll builds a selector per call.
        self._ready = select.poll()
        self._ready.register(commands.fileno(), select.POLLIN)

    def receive(self, block: bool) -> list[Command]:
        commands: list[Command] = []
        try:
            if block:
                commands.append(self._commands.recv())
            while self._ready.poll(0):  # a command, or EOF (then recv raises)
                commands.append(self._commands.recv())
        except (EOFError, OSError):  # the server's process is gone: nobody to serve
            commands.append(Stop())
        return commands


def _die(err: BaseException) -> None:
    """A report that cannot be written ends the process, as it did when the loop wrote it:
    the server sees the pipe close and ends every request with an error."""
    logger.error("writing an engine report failed: %r", err)
    os._exit(1)


class ReportThread:
    """Writes step outputs to the reports pipe from a thread of its own, in order."""

    def __init__(self, fd: int, on_failure: Callable[[BaseException], None] = _die) -> None:
        self._writer = FrameWriter(fd)
        self._on_failure = on_failure
        # Unbounded: the engine's work is bounded by its requests, and a full pipe would
        # otherwise stall the step (and the cancels it reads) behind a slow reader.
        self._outbox: queue.SimpleQueue[StepOutput | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="engine-reports", daemon=True)
        self._thread.start()

    def publish(self, out: StepOutput) -> None:
        """Queue a step output for the pipe."""
        self._outbox.put(out)

    def close(self, timeout: float = 10.0) -> None:
        """Write everything queued, then end the thread."""
        self._outbox.put(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        while (out := self._outbox.get()) is not None:
            try:
                self._writer.send(to_wire(out))
            except OSError:  # the server's process is gone: the inbox will say Stop
                pass
            except BaseException as err:  # noqa: BLE001 - nobody else would see it
                self._on_failure(err)
                return


def run_engine(spec: EngineSpec, commands: Connection, reports: Connection) -> None:
    """The child's entry point: start up, say Ready (or Failed), then serve commands."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the server's; it stops us
    try:
        core = build_core(spec)
    except Exception as err:  # noqa: BLE001 - any start-up failure goes to the parent
        reports.send(Failed(f"{type(err).__name__}: {err}"))
        return
    gc.freeze()  # full collections walk only what the loop makes, not the loaded model
    reports.send(Ready())
    writer = ReportThread(reports.fileno())
    try:
        run_engine_loop(core, _PipeInbox(commands), writer.publish)
    finally:
        writer.close()  # the last report (the cancellations of Stop) goes out first
