"""The engine core: the scheduler and the sampling state it steps, driven by commands.

As in vLLM V1, `EngineCore.step()` schedules, executes and returns its output, and the
drivers (`drivers/thread.py` in MLServer's process, `drivers/process.py` in a spawned one)
only move commands in and outputs out, through `run_engine_loop`. Generations (sampler,
stopping, detokenizer) exist only here, where tokens are sampled.
"""

from __future__ import annotations

import queue
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from threadpoolctl import threadpool_limits

from ...errors import client_message
from ...events import FinishReason
from ..model_folder import ModelFolder, open_model_folder
from ..sample.generation import Generation
from ..settings import TextGenerationSettings
from ..tokenizer import Decoder
from .messages import Cancel, Command, Stop, Submit
from .scheduler import Scheduler, SequenceRequest
from .step_output import StepOutput
from .warmup import warm_up

SHUTDOWN_MESSAGE = "the text engine is shutting down"


@dataclass(frozen=True)
class EngineSpec:
    """What an engine core loads: picklable, so a driver can hand it to another process."""

    path: Path
    """The model folder."""
    settings: TextGenerationSettings
    model_name: str


class Listener(Protocol):
    """Who a driver hands the core's outputs to (the runtime's `EngineClient`)."""

    def deliver(self, out: StepOutput) -> None:
        """A step output, on the event loop."""
        ...

    def lost(self, message: str) -> None:
        """The engine is gone (its process or thread died), on the event loop."""
        ...


class EngineCore:
    """Commands in (`submit`, `cancel`), one `StepOutput` out of every `step`."""

    def __init__(
        self,
        scheduler: Scheduler,
        tokenizer: Decoder,
        eog_token_ids: Collection[int] = (),
        folder: ModelFolder | None = None,
    ):
        self.scheduler = scheduler
        self.tokenizer = tokenizer
        self.eog_token_ids = frozenset(eog_token_ids)
        self.folder = folder
        """The model folder the tokenizer came from, closed with the core."""

    @property
    def busy(self) -> bool:
        """Whether any request is running or waiting."""
        return bool(self.scheduler.running or self.scheduler.waiting)

    def submit(self, command: Submit) -> None:
        """Build the request's sampling state and queue it."""
        generation = Generation(
            command.prompt_ids, command.params, self.tokenizer, self.eog_token_ids
        )
        if command.replay:
            generation.replay(command.replay)
        request = SequenceRequest(command.request_id, generation, command.deadline, command.arrival)
        self.scheduler.submit(request)

    def cancel(self, request_id: int) -> None:
        """Drop a request at the next step."""
        self.scheduler.cancel(request_id)

    def step(self, between: Callable[[StepOutput], None] | None = None) -> StepOutput:
        """One scheduler step; a failed step ends the running sequences with an error (after
        what the step made before it failed: reaped requests' ends, first tokens), and the
        core goes on serving."""
        out = StepOutput()
        try:
            return self.scheduler.step(between, out)
        except Exception as err:  # noqa: BLE001 - one failed step must not stop the engine
            message = client_message(err, "engine step failed")
            self.scheduler.end(FinishReason.ERROR, message, waiting=False, out=out)
            out.step_done = True
            return out

    def shutdown(self) -> StepOutput:
        """End every request as cancelled."""
        return self.scheduler.end(FinishReason.CANCELLED, SHUTDOWN_MESSAGE)

    def close(self) -> None:
        """Free the engine's native memory now (llama.cpp's context and weights): with
        `gc.freeze` a reference cycle would keep it until the process ends."""
        close = getattr(self.scheduler.engine, "close", None)
        if close is not None:
            close()
        if self.folder is not None:
            self.folder.close()


class Inbox(Protocol):
    """Where a driver's commands arrive (a pipe, a thread-safe queue, a Redis stream)."""

    def receive(self, block: bool) -> Sequence[Command]:
        """The commands waiting (at least one if `block`); a `Stop` once the sender is gone."""
        ...


class QueueInbox:
    """Commands put by other threads (the event loop's, a worker's Redis readers)."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[Command] = queue.SimpleQueue()

    def put(self, command: Command) -> None:
        self._queue.put(command)

    def receive(self, block: bool) -> list[Command]:
        commands = [self._queue.get()] if block else []
        while True:
            try:
                commands.append(self._queue.get_nowait())
            except queue.Empty:
                return commands


def run_engine_loop(core: EngineCore, inbox: Inbox, publish: Callable[[StepOutput], None]) -> None:
    """A driver's loop: apply commands between steps (a cancel lands at the next step) and
    inside them (mid-decode admission), step while there is work, publish every output.
    On `Stop`, end what is left and publish that last."""
    stopping = False

    def take_commands(block: bool) -> None:
        nonlocal stopping
        for command in inbox.receive(block):
            if isinstance(command, Stop):
                stopping = True
            elif isinstance(command, Cancel):
                core.cancel(command.request_id)
            else:
                core.submit(command)

    def between(out: StepOutput) -> None:
        if not out.empty:
            publish(out)
        if not stopping:
            take_commands(block=False)

    try:
        while not stopping:
            take_commands(block=not core.busy)
            if core.busy and not stopping:
                publish(core.step(between))
        publish(core.shutdown())
    finally:
        core.close()


def build_core(spec: EngineSpec) -> EngineCore:
    """Load the model, cap BLAS threads, warm up and wrap it in a core; blocking, so run it
    off the event loop. Every driver starts its core here, so all sample the same tokens."""
    settings = spec.settings
    threadpool_limits(limits=settings.blas_threads, user_api="blas")
    folder = open_model_folder(spec.path, settings, spec.model_name)
    engine = folder.engine(settings)
    if settings.warmup_tokens:
        warm_up(engine, settings.warmup_tokens)
    scheduler = Scheduler(
        engine,
        max_running=settings.max_running,
        prefill_chunk_tokens=settings.prefill_chunk_tokens,
        auto_stream_step=settings.auto_stream_step,
    )
    return EngineCore(scheduler, folder.tokenizer(), folder.eog_token_ids, folder)
