"""The engine in its own process (vLLM V1's engine core), talking to the runtime over pipes.

The engine loop (numpy forward, sampling, detokenizing) and MLServer's event loop are both
GIL-bound Python; in one process they take turns. Here a `spawn`ed child (not fork: the
server's process runs gRPC and uvloop threads) loads the checkpoint, warms up and runs the
`Scheduler` on its main thread. Commands go down one pipe: `Submit`, `Cancel`, `Stop`.
After each step one `StepReport` comes up the other with every delta of that step. The
parent reads reports on its event loop (`add_reader`: no thread, no extra GIL hand-off),
puts each delta on its request's queue and records the metrics.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import multiprocessing
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path

from ..errors import HTTP_UNAVAILABLE, InvalidSettings, StreamingError
from .engine_child import run_engine
from .engine_messages import Cancel, Failed, StepReport, Stop, Submit, unpack
from .generation import Delta, Generation
from .metrics import GenerationMetrics, RequestTiming
from .scheduler import at_capacity
from .settings import TextGenerationSettings
from .stopping import FinishReason

logger = logging.getLogger(__name__)

START_TIMEOUT_S = 300.0
"""Longest wait for the child to load and warm up before the load fails."""
STOP_TIMEOUT_S = 10.0
"""Longest wait for the child to finish after `Stop` before it is terminated."""


class EngineUnavailable(StreamingError):
    """The engine process is gone: the model cannot generate until it is reloaded."""

    def __init__(self, msg: str):
        super().__init__(msg, HTTP_UNAVAILABLE)


@dataclass
class _InFlight:
    """A submitted request as the parent tracks it until its final delta."""

    generation: Generation
    """A mirror of the child's: only its token count and finish reason are kept up to date."""
    queue: asyncio.Queue[Delta]
    timing: RequestTiming

    def deliver(self, delta: Delta, metrics: GenerationMetrics, now: float) -> None:
        """Hand a delta to the request's stream and account for it."""
        self.generation.completion_tokens += len(delta.token_ids)
        if delta.finish_reason is not None:
            self.generation.finish_reason = delta.finish_reason
        self.timing.record(metrics, delta, now)
        self.queue.put_nowait(delta)


@dataclass
class EngineProcess:
    """The runtime's side of the engine process: submit, cancel, stop; deltas to queues."""

    process: BaseProcess
    commands: Connection
    reports: Connection
    settings: TextGenerationSettings
    metrics: GenerationMetrics
    loop: asyncio.AbstractEventLoop
    inflight: dict[int, _InFlight] = field(default_factory=dict)
    failure: str | None = None
    """Why the process is gone; set once, then every submit is refused."""
    _ids: itertools.count[int] = field(default_factory=itertools.count)
    _steps: int = 0
    _stopping: bool = False

    @classmethod
    async def start(
        cls,
        folder: Path,
        settings: TextGenerationSettings,
        eos_token_id: int | None,
        metrics: GenerationMetrics,
        timeout: float = START_TIMEOUT_S,
    ) -> EngineProcess:
        """Spawn the child and wait (off the loop) until it is warmed up or has failed."""
        context = multiprocessing.get_context("spawn")
        commands_out, commands_in = context.Pipe(duplex=False)
        reports_out, reports_in = context.Pipe(duplex=False)
        process = context.Process(
            target=run_engine,
            args=(str(folder), settings, eos_token_id, commands_out, reports_in),
            name="text-engine",
            daemon=True,
        )
        process.start()
        commands_out.close()  # the child's ends: closing ours lets either side see EOF
        reports_in.close()
        try:
            await asyncio.to_thread(_await_ready, process, reports_out, folder, timeout)
        except BaseException:
            _end(process, 0.0)
            commands_in.close()
            reports_out.close()
            raise
        loop = asyncio.get_running_loop()
        client = cls(process, commands_in, reports_out, settings, metrics, loop)
        loop.add_reader(reports_out.fileno(), client._read_reports)
        return client

    def submit(self, generation: Generation, deadline: float, queue: asyncio.Queue[Delta]) -> int:
        """Send a generation to the engine; refuse at capacity or when the engine is gone."""
        if self.failure is not None:
            raise EngineUnavailable(self.failure)
        limit = self.settings.max_running + self.settings.max_waiting
        if len(self.inflight) >= limit:
            waiting = len(self.inflight) - self.settings.max_running
            raise at_capacity(waiting, self.settings.max_waiting, self.settings.max_running)
        rid = next(self._ids)
        arrival = time.monotonic()
        self.inflight[rid] = _InFlight(generation, queue, RequestTiming(arrival))
        self._send(Submit(rid, generation.prompt_ids, generation.params, arrival, deadline))
        return rid

    def cancel(self, handle: int) -> None:
        """Ask the engine to drop a request; its `cancelled` delta follows."""
        if handle in self.inflight:
            self._send(Cancel(handle))

    async def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """Stop the child (Stop, join, then terminate); unfinished requests end cancelled."""
        self._stopping = True
        if self.failure is None:
            self._send(Stop())
        # While we wait, the loop still reads the child's last report (its cancellations).
        await asyncio.to_thread(_end, self.process, timeout)
        self._read_reports()
        self._close("the text engine is shutting down", FinishReason.CANCELLED)

    def _send(self, command: Submit | Cancel | Stop) -> None:
        try:
            self.commands.send(command)
        except OSError:  # the child is gone
            self._on_exit()

    def _read_reports(self) -> None:
        """Dispatch every report waiting on the pipe; EOF means the child has exited."""
        try:
            while not self.reports.closed and self.reports.poll():
                self._dispatch(self.reports.recv())
        except (EOFError, OSError):
            self._on_exit()

    def _dispatch(self, report: StepReport) -> None:
        now = time.monotonic()
        for rid, queue_time in report.admitted:
            self.metrics.queue_time.observe(queue_time)
            if rid in self.inflight:
                self.metrics.prompt_tokens.inc(self.inflight[rid].generation.prompt_tokens)
        for wire in report.deltas:
            rid, delta = unpack(wire)
            request = self.inflight.get(rid)
            if request is None:
                continue
            request.deliver(delta, self.metrics, now)
            if delta.finish_reason is not None:
                del self.inflight[rid]
        self.metrics.running.set(report.running)
        self.metrics.waiting.set(report.waiting)
        self.metrics.steps.inc(report.steps - self._steps)
        self._steps = report.steps

    def _close(self, message: str, reason: FinishReason) -> None:
        """Stop reading; end every request still in flight; refuse new ones from now on."""
        if self.failure is not None:
            return
        self.failure = message
        if not self.reports.closed:
            self.loop.remove_reader(self.reports.fileno())
            self.reports.close()
        self.commands.close()
        if reason is FinishReason.ERROR:
            logger.error("%s", message)
        now = time.monotonic()
        for request in self.inflight.values():
            request.deliver(request.generation.finish(reason, message), self.metrics, now)
        self.inflight.clear()
        self.metrics.running.set(0)
        self.metrics.waiting.set(0)

    def _on_exit(self) -> None:
        if self._stopping:
            self._close("the text engine is shutting down", FinishReason.CANCELLED)
            return
        self.process.join(1.0)  # it closed its pipe, so it is exiting: learn how
        self._close(
            f"the text engine process exited unexpectedly (exit code {self.process.exitcode}); "
            "reload the model to serve again.",
            FinishReason.ERROR,
        )


def _await_ready(process: BaseProcess, reports: Connection, folder: Path, timeout: float) -> None:
    """Block until the child says Ready; a failure, early exit or timeout fails the load."""
    where = f"the text engine process for {folder}"
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
