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
import signal
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import NamedTuple

from tokenizers import Tokenizer

from ..errors import HTTP_UNAVAILABLE, InvalidSettings, StreamingError
from .generation import Delta, Generation
from .metrics import GenerationMetrics, RequestTiming
from .params import GenerationParams
from .scheduler import Scheduler, SequenceRequest, at_capacity
from .settings import TextGenerationSettings
from .stopping import FinishReason
from .warmup import ready_scheduler

logger = logging.getLogger(__name__)

TOKENIZER_FILE = "tokenizer.json"
START_TIMEOUT_S = 300.0
"""Longest wait for the child to load and warm up before the load fails."""
STOP_TIMEOUT_S = 10.0
"""Longest wait for the child to finish after `Stop` before it is terminated."""


class EngineUnavailable(StreamingError):
    """The engine process is gone: the model cannot generate until it is reloaded."""

    def __init__(self, msg: str):
        super().__init__(msg, HTTP_UNAVAILABLE)


@dataclass(frozen=True)
class Submit:
    """Start a generation; times are `time.monotonic()`, which is system-wide."""

    request_id: int
    prompt_ids: list[int]
    params: GenerationParams
    arrival: float
    deadline: float


@dataclass(frozen=True)
class Cancel:
    """Drop a request (its client left); it ends with a `cancelled` delta."""

    request_id: int


@dataclass(frozen=True)
class Stop:
    """Cancel everything, send a last report and exit."""


@dataclass(frozen=True)
class Ready:
    """The engine is loaded and warmed up."""


@dataclass(frozen=True)
class Failed:
    """The engine could not start; `message` says why."""

    message: str


WireDelta = tuple[
    int,
    str,
    list[int],
    list[float],
    list[tuple[tuple[int, float], ...]],
    str | None,
    str | None,
    bool,
]
"""(request id, then a Delta's fields): plain tuples pickle ~5x faster than dataclasses."""


def pack(request_id: int, delta: Delta) -> WireDelta:
    """A delta as it crosses the pipe."""
    reason = None if delta.finish_reason is None else delta.finish_reason.value
    fields = (delta.text, delta.token_ids, delta.logprobs, delta.top_logprobs)
    return (request_id, *fields, reason, delta.error, delta.retryable)


def unpack(wire: WireDelta) -> tuple[int, Delta]:
    """The request id and delta of a packed delta."""
    rid, text, token_ids, logprobs, top_logprobs, reason, error, retryable = wire
    finish = None if reason is None else FinishReason(reason)
    return rid, Delta(text, token_ids, logprobs, top_logprobs, finish, error, retryable)


class StepReport(NamedTuple):
    """Everything one engine step produced, in one message."""

    deltas: list[WireDelta]
    running: int
    waiting: int
    steps: int
    admitted: list[tuple[int, float]]
    """(request id, seconds it waited for a slot) of requests admitted this step."""


# --- the child ------------------------------------------------------------------------


def run_engine(
    folder: str,
    settings: TextGenerationSettings,
    eos_token_id: int | None,
    commands: Connection,
    reports: Connection,
) -> None:
    """The child's entry point: start up, say Ready (or Failed), then serve commands."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the server's; it stops us
    try:
        scheduler = ready_scheduler(Path(folder), settings)
        tokenizer = Tokenizer.from_file(str(Path(folder) / TOKENIZER_FILE))
    except Exception as err:  # noqa: BLE001 - any start-up failure goes to the parent
        reports.send(Failed(f"{type(err).__name__}: {err}"))
        return
    reports.send(Ready())
    _EngineLoop(scheduler, tokenizer, eos_token_id, commands, reports).run()


class _EngineLoop:
    """Steps the scheduler while there is work; blocks on the command pipe when idle."""

    def __init__(
        self,
        scheduler: Scheduler,
        tokenizer: Tokenizer,
        eos_token_id: int | None,
        commands: Connection,
        reports: Connection,
    ) -> None:
        self.scheduler = scheduler
        self.tokenizer = tokenizer
        self.eos = eos_token_id
        self.commands = commands
        self.reports = reports
        self.requests: dict[int, SequenceRequest] = {}
        self.unadmitted: dict[int, SequenceRequest] = {}
        self.out: list[WireDelta] = []
        self.stopping = False

    def run(self) -> None:
        """Read commands between steps (so a cancel lands at the next step), step, report."""
        while not self.stopping:
            busy = self.scheduler.running or self.scheduler.waiting
            self._read_commands(block=not busy)
            if self.stopping:
                break
            if self.scheduler.running or self.scheduler.waiting:
                self.scheduler.safe_step()
            self._report()
        self.scheduler.abort_all()
        self._report()

    def _read_commands(self, block: bool) -> None:
        try:
            if block:
                self._handle(self.commands.recv())
            while not self.stopping and self.commands.poll():
                self._handle(self.commands.recv())
        except (EOFError, OSError):  # the server's process is gone: nobody to serve
            self.stopping = True

    def _handle(self, command: Submit | Cancel | Stop) -> None:
        if isinstance(command, Stop):
            self.stopping = True
        elif isinstance(command, Cancel):
            request = self.requests.get(command.request_id)
            if request is not None:
                self.scheduler.cancel(request)
        else:
            self._submit(command)

    def _submit(self, command: Submit) -> None:
        rid = command.request_id
        generation = Generation(command.prompt_ids, command.params, self.tokenizer, self.eos)
        request = SequenceRequest(
            generation,
            sink=lambda delta: self.out.append(pack(rid, delta)),
            deadline=command.deadline,
            arrival=command.arrival,
        )
        try:
            self.scheduler.submit(request)
        except StreamingError as err:  # the parent counts first, so this is a safety net
            self.out.append(pack(rid, generation.finish(FinishReason.ERROR, str(err), True)))
            return
        self.requests[rid] = self.unadmitted[rid] = request

    def _report(self) -> None:
        admitted = [
            (rid, r.admitted_at - r.arrival)
            for rid, r in self.unadmitted.items()
            if r.admitted_at is not None
        ]
        for rid, _ in admitted:
            del self.unadmitted[rid]
        for wire in self.out:
            rid, reason = wire[0], wire[5]
            if reason is not None:  # finished: forget it
                self.requests.pop(rid, None)
                self.unadmitted.pop(rid, None)
        report = StepReport(
            self.out,
            self.scheduler.running,
            self.scheduler.waiting,
            self.scheduler.steps,
            admitted,
        )
        self.out = []
        try:
            self.reports.send(report)
        except OSError:
            self.stopping = True


# --- the parent -----------------------------------------------------------------------


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
