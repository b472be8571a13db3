"""The runtime's one view of the engine, whatever driver runs it.

It keeps a small record per request (for the final event and the metrics), applies the one
capacity rule, sends commands through the driver and hands each step output's deltas to
their requests' queues, recording the metrics as it goes.
"""

from __future__ import annotations

import itertools
import logging
import time
from typing import Protocol

from ...errors import HTTP_UNAVAILABLE, StreamingError
from ...events import FinishReason
from ..core.engine_core import SHUTDOWN_MESSAGE, EngineSpec
from ..core.messages import Cancel, Command, Submit
from ..core.step_output import StepOutput
from ..record import RequestRecord
from ..sample.generation import Delta
from ..sample.params import GenerationParams
from ..settings import check_capacity
from .metrics import GenerationMetrics
from .process import ProcessDriver
from .thread import ThreadDriver

logger = logging.getLogger(__name__)


class EngineUnavailable(StreamingError):
    """The engine is gone: the model cannot generate until it is reloaded."""

    def __init__(self, msg: str):
        super().__init__(msg, HTTP_UNAVAILABLE)


class Driver(Protocol):
    """A shell around the engine core: moves commands in (its outputs go to `deliver`)."""

    def send(self, command: Command) -> None: ...

    async def stop(self) -> None: ...


class EngineClient:
    """Submit, cancel and stop generations; deltas to each request's queue."""

    def __init__(self, max_running: int, max_waiting: int, metrics: GenerationMetrics) -> None:
        self.max_running = max_running
        self.max_waiting = max_waiting
        self.metrics = metrics
        self.inflight: dict[int, RequestRecord] = {}
        self.driver: Driver | None = None
        self.failure: str | None = None
        """Why the engine is gone; set once, then every submit is refused."""
        self._ids = itertools.count()

    @classmethod
    async def start(cls, spec: EngineSpec, metrics: GenerationMetrics) -> EngineClient:
        """Start the engine core behind the driver the settings ask for: its own process
        (default) or a thread of this one (`engine_process: false`)."""
        settings = spec.settings
        client = cls(settings.max_running, settings.max_waiting, metrics)
        start = ProcessDriver.start if settings.engine_process else ThreadDriver.start
        client.driver = await start(spec, client)
        return client

    def submit(
        self, prompt_ids: list[int], params: GenerationParams, deadline: float
    ) -> RequestRecord:
        """Start a generation; refuse it at capacity or when the engine is gone."""
        if self.failure is not None or self.driver is None:
            raise EngineUnavailable(self.failure or "the text engine is not running.")
        check_capacity(len(self.inflight) - self.max_running, self.max_waiting, self.max_running)
        record = RequestRecord(next(self._ids), len(prompt_ids), params.seed, deadline=deadline)
        self.inflight[record.request_id] = record
        arrival = record.timing.arrival
        self.driver.send(Submit(record.request_id, prompt_ids, params, arrival, deadline))
        return record

    def cancel(self, record: RequestRecord) -> None:
        """Drop a generation whose client left; its last delta says `cancelled`."""
        if record.request_id in self.inflight and self.driver is not None:
            self.driver.send(Cancel(record.request_id))

    def deliver(self, out: StepOutput) -> None:
        """Hand a step output's deltas to their requests and record the metrics."""
        self.metrics.observe_step(out)
        now = time.monotonic()
        for request_id, delta in out.deltas.items():
            record = self.inflight.get(request_id)
            if record is not None:
                self._account(record, delta, now)

    def lost(self, message: str) -> None:
        """The engine is gone: end every request in flight with an error, refuse new ones."""
        logger.error("%s", message)
        self._end_all(message, FinishReason.ERROR)

    async def stop(self) -> None:
        """Stop the engine; unfinished generations end as cancelled."""
        if self.driver is not None and self.failure is None:
            await self.driver.stop()
        self._end_all(SHUTDOWN_MESSAGE, FinishReason.CANCELLED)

    def _account(self, record: RequestRecord, delta: Delta, now: float) -> None:
        record.account(delta)
        record.timing.record(self.metrics, delta, now)
        if delta.finish_reason is not None:
            del self.inflight[record.request_id]
        record.deltas.put_nowait(delta)

    def _end_all(self, message: str, reason: FinishReason) -> None:
        if self.failure is not None:
            return
        self.failure = message
        now = time.monotonic()
        for record in list(self.inflight.values()):
            self._account(record, Delta(finish_reason=reason, error=message), now)
        self.metrics.running.set(0)
        self.metrics.waiting.set(0)
