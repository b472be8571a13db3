"""Serving metrics of text generation, on MLServer's Prometheus registry.

Names follow vLLM's (`vllm:time_to_first_token_seconds`, ...) under this project's prefix,
labelled by model name and version. They are taken at the same points whatever driver runs
the engine: counts from each step output (prompt tokens as they are prefilled, queue time
at admission), latencies where each delta reaches the runtime (`RequestTiming`), so TTFT
and inter-token latency include the hop from the engine, as the client sees them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar, cast

import prometheus_client
from mlserver.metrics import REGISTRY
from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from ..core.step_output import StepOutput
    from ..sample.generation import Delta

PREFIX = "mlserver_streaming:"
LABELS = ("model_name", "model_version")

TTFT = PREFIX + "time_to_first_token_seconds"
INTER_TOKEN = PREFIX + "inter_token_latency_seconds"
QUEUE_TIME = PREFIX + "request_queue_time_seconds"
E2E_LATENCY = PREFIX + "e2e_request_latency_seconds"
PROMPT_TOKENS = PREFIX + "prompt_tokens"  # exposed as ..._total
GENERATION_TOKENS = PREFIX + "generation_tokens"  # exposed as ..._total
RUNNING = PREFIX + "num_requests_running"
WAITING = PREFIX + "num_requests_waiting"
FINISHED = PREFIX + "request_success"  # exposed as ..._total, by finished_reason
STEPS = PREFIX + "engine_steps"  # exposed as ..._total

_LATENCY_BUCKETS: tuple[float, ...] = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    0.75,
)
_LATENCY_BUCKETS += (1.0, 2.5, 5.0, 7.5, 10.0, 30.0, 60.0)
_REQUEST_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0)

MetricT = TypeVar("MetricT", bound=MetricWrapperBase)


class _RegistryBridge(Collector):
    """Collects MLServer's registry into prometheus_client's default one.

    With `parallel_workers: 0` (which streaming needs) MLServer's /metrics endpoint serves
    only the default registry, so metrics registered through MLServer's would not show.
    """

    def collect(self) -> Iterable[Metric]:
        return REGISTRY.collect()


_BRIDGE = _RegistryBridge()


def expose_mlserver_registry() -> None:
    """Make MLServer's registry visible on its metrics endpoint (idempotent)."""
    with contextlib.suppress(ValueError):  # already registered
        if _BRIDGE not in prometheus_client.REGISTRY._collector_to_names:
            prometheus_client.REGISTRY.register(_BRIDGE)


def _get_or_create(cls: type[MetricT], name: str, doc: str, **kwargs: Any) -> MetricT:
    # Several models (and reloads) share one registry: reuse a collector once registered.
    lookup = name.removesuffix("_total")
    if REGISTRY.exists(lookup):
        return cast(MetricT, REGISTRY.get(lookup))
    labels = kwargs.pop("labels", LABELS)
    return cls(name, doc, labelnames=labels, registry=REGISTRY, **kwargs)


class GenerationMetrics:
    """The metric children of one model (name + version)."""

    def __init__(self, model_name: str, model_version: str | None) -> None:
        expose_mlserver_registry()
        labels = {"model_name": model_name, "model_version": model_version or ""}

        def histogram(name: str, doc: str, buckets: tuple[float, ...]) -> Histogram:
            return _get_or_create(Histogram, name, doc, buckets=buckets).labels(**labels)

        def counter(name: str, doc: str) -> Counter:
            return _get_or_create(Counter, name, doc).labels(**labels)

        def gauge(name: str, doc: str) -> Gauge:
            return _get_or_create(Gauge, name, doc).labels(**labels)

        self.ttft = histogram(TTFT, "Time from arrival to the first token.", _LATENCY_BUCKETS)
        self.inter_token = histogram(
            INTER_TOKEN, "Time between two tokens of one stream.", _LATENCY_BUCKETS
        )
        self.queue_time = histogram(QUEUE_TIME, "Time waited for a slot.", _REQUEST_BUCKETS)
        self.e2e = histogram(E2E_LATENCY, "Time from arrival to the final event.", _REQUEST_BUCKETS)
        self.prompt_tokens = counter(PROMPT_TOKENS, "Prefilled prompt tokens.")
        self.generation_tokens = counter(GENERATION_TOKENS, "Generated tokens.")
        self.running = gauge(RUNNING, "Sequences holding a slot.")
        self.waiting = gauge(WAITING, "Requests waiting for a slot.")
        self.steps = counter(STEPS, "Engine steps (prefill and/or decode).")
        self._finished = _get_or_create(
            Counter, FINISHED, "Finished requests by reason.", labels=(*LABELS, "finished_reason")
        )
        self._labels = labels

    def finished(self, reason: str) -> None:
        """Count one finished request under its finish reason."""
        self._finished.labels(**self._labels, finished_reason=reason).inc()

    def observe_step(self, out: StepOutput) -> None:
        """Counts of a step output: queue times, prefilled prompt tokens, gauges, steps."""
        for queue_time in out.admitted.values():
            self.queue_time.observe(queue_time)
        if out.prompt_tokens:
            self.prompt_tokens.inc(out.prompt_tokens)
        self.running.set(out.running)
        self.waiting.set(out.waiting)
        if out.step_done:
            self.steps.inc()


@dataclass
class RequestTiming:
    """Latency metrics of one request, taken where its deltas reach the runtime."""

    arrival: float
    last_token_at: float | None = None

    def record(self, metrics: GenerationMetrics, delta: Delta, now: float) -> None:
        """Count a delta's tokens; observe TTFT, inter-token gaps and, at the end, e2e."""
        tokens = len(delta.token_ids)
        if tokens:
            metrics.generation_tokens.inc(tokens)
            if self.last_token_at is None:
                metrics.ttft.observe(now - self.arrival)
            else:
                # Tokens held back (half a character) arrive together: share the gap.
                for _ in range(tokens):
                    metrics.inter_token.observe((now - self.last_token_at) / tokens)
            self.last_token_at = now
        if delta.finish_reason is not None:
            metrics.e2e.observe(now - self.arrival)
            metrics.finished(delta.finish_reason.value)
