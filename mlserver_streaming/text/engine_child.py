"""The engine process's side: build the core, say Ready, then run the engine loop over pipes.

It runs on the child's main thread; when idle it blocks on the command pipe, when busy it
drains pending commands between steps and between a decode's layers.
"""

from __future__ import annotations

import contextlib
import gc
import select
import signal
from multiprocessing.connection import Connection

from .engine_core import EngineSpec, build_core, run_engine_loop
from .engine_messages import Command, Failed, Ready, Stop, to_wire
from .pipe_frames import FrameWriter
from .step_output import StepOutput


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
    writer = FrameWriter(reports.fileno())

    def publish(out: StepOutput) -> None:
        # If the server's process is gone, the inbox will say Stop.
        with contextlib.suppress(OSError):
            writer.send(to_wire(out))

    run_engine_loop(core, _PipeInbox(commands), publish)
