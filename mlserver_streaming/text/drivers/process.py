"""The process driver: the engine core in a spawned process (vLLM V1's `EngineCoreProc`).

The engine loop (numpy forward, sampling, detokenizing) and MLServer's event loop are both
GIL-bound Python; in one process they take turns. Here a `spawn`ed child (not fork: the
server's process runs gRPC and uvloop threads) builds the core and runs `run_engine_loop`
on its main thread (`drivers/child.py`). Commands go down one pipe; every step output comes
up the other as a `StepReport`, read on the event loop (`add_reader`: no thread, no extra
GIL hand-off; `pipe_frames.py`: one read for all that waits) and handed to the listener.
Both directions write `Connection`'s frames (one `pickle.dumps`, one `os.write`); here
without blocking the loop (`QueuedFrameWriter`: a full pipe's rest waits for the child to
read), and the child reads its commands with `Connection.recv`.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path

from ...errors import InvalidSettings
from ..core.engine_core import EngineSpec, Listener
from ..core.messages import Command, Failed, Stop, from_wire
from .child import run_engine
from .pipe_frames import FrameReader, QueuedFrameWriter

logger = logging.getLogger(__name__)

START_TIMEOUT_S = 300.0
"""Longest wait for the child to load and warm up before the load fails."""
STOP_TIMEOUT_S = 10.0
"""Longest wait for the child to finish after `Stop` before it is terminated."""


class ProcessDriver:
    """Moves commands to the engine process and its step outputs to the listener."""

    def __init__(
        self,
        process: BaseProcess,
        commands: Connection,
        reports: Connection,
        listener: Listener,
    ) -> None:
        self.process = process
        self._commands = commands
        self._reports = reports
        self._listener = listener
        self._loop = asyncio.get_running_loop()
        # Frames the child's recv reads; a full pipe never blocks the loop.
        self._writer = QueuedFrameWriter(commands.fileno(), self._loop, self._on_exit)
        self._stopping = False
        self._frames = FrameReader(reports.fileno())
        self._loop.add_reader(reports.fileno(), self._read_reports)

    @classmethod
    async def start(
        cls, spec: EngineSpec, listener: Listener, timeout: float = START_TIMEOUT_S
    ) -> ProcessDriver:
        """Spawn the child and wait (off the loop) until it is warmed up or has failed."""
        context = multiprocessing.get_context("spawn")
        commands_out, commands_in = context.Pipe(duplex=False)
        reports_out, reports_in = context.Pipe(duplex=False)
        process = context.Process(
            target=run_engine,
            args=(spec, commands_out, reports_in),
            name="text-engine",
            daemon=True,
        )
        process.start()
        commands_out.close()  # the child's ends: closing ours lets either side see EOF
        reports_in.close()
        try:
            await asyncio.to_thread(_await_ready, process, reports_out, spec.path, timeout)
        except BaseException:
            _end(process, 0.0)
            commands_in.close()
            reports_out.close()
            raise
        return cls(process, commands_in, reports_out, listener)

    def send(self, command: Command) -> None:
        """Send a command to the engine process."""
        if self._commands.closed:
            return
        self._writer.send(command)

    async def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """Stop the child (Stop, join, then terminate); its last report reaches the listener."""
        self._stopping = True
        self.send(Stop())
        # While we wait, the loop still reads the child's last report (its cancellations).
        await asyncio.to_thread(_end, self.process, timeout)
        self._read_reports()
        self._close()

    def _read_reports(self) -> None:
        """Hand on every report waiting on the pipe; EOF means the child has exited."""
        if self._reports.closed:
            return
        try:
            reports, closed = self._frames.read()
        except OSError:
            reports, closed = [], True
        for report in reports:
            self._listener.deliver(from_wire(report))
        if closed:
            self._on_exit()

    def _close(self) -> None:
        if not self._reports.closed:
            self._loop.remove_reader(self._reports.fileno())
            self._reports.close()
        if not self._commands.closed:
            self._writer.close()
            self._commands.close()

    def _on_exit(self) -> None:
        self._close()
        if self._stopping:
            return
        self.process.join(1.0)  # it closed its pipe, so it is exiting: learn how
        self._listener.lost(
            f"the text engine process exited unexpectedly (exit code {self.process.exitcode}); "
            "reload the model to serve again."
        )


def _await_ready(process: BaseProcess, reports: Connection, path: Path, timeout: float) -> None:
    """Block until the child says Ready; a failure, early exit or timeout fails the load."""
    where = f"the text engine process for {path}"
    if not reports.poll(timeout):
        raise InvalidSettings(f"{where} was not ready within {timeout:.0f} s.")
    try:
        message = reports.recv()
    except EOFError:
        process.join(1.0)
        raise InvalidSettings(
            f"{where} exited with code {process.exitcode} before it was ready; see its log."
        ) from None
    if isinstance(message, Failed):
        raise InvalidSettings(f"{where} failed to load the model: {message.message}")


def _end(process: BaseProcess, timeout: float) -> None:
    """Join the child; terminate it if it does not exit in time, kill it if that fails."""
    process.join(timeout)
    if process.is_alive():
        process.terminate()
        process.join(2.0)
    if process.is_alive():
        process.kill()
        process.join(2.0)
