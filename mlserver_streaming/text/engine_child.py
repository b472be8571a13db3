"""The engine process's side: load, warm up, then step the scheduler and report each step.

It runs on the child's main thread; when idle it blocks on the command pipe, when busy it
drains pending commands between steps, so a cancel takes effect at the next step.
"""

from __future__ import annotations

import gc
import logging
import signal
from multiprocessing.connection import Connection
from pathlib import Path

from tokenizers import Tokenizer

from ..errors import StreamingError
from .engine_messages import Cancel, Failed, Ready, StepReport, Stop, Submit, WireDelta, pack
from .generation import Generation
from .scheduler import Scheduler, SequenceRequest
from .settings import TextGenerationSettings
from .stopping import FinishReason
from .warmup import ready_scheduler

logger = logging.getLogger(__name__)

TOKENIZER_FILE = "tokenizer.json"


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
    gc.freeze()  # full collections walk only what the loop makes, not the loaded model
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
        # First tokens go out as soon as their prefill ends, not after the batch decode.
        scheduler.on_prefilled = self._flush
        # Requests that arrive during a decode start between its layers.
        scheduler.poll = self._poll

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

    def _poll(self) -> None:
        if not self.stopping:
            self._read_commands(block=False)

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

    def _flush(self) -> None:
        if self.out:
            self._report()

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
