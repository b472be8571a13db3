"""Engine start-up: load the checkpoint, cap BLAS threads and warm up, in either mode."""

from __future__ import annotations

from pathlib import Path

from threadpoolctl import threadpool_limits

from ..engine import GPT2Engine
from .metrics import GenerationMetrics
from .scheduler import Engine, Scheduler
from .settings import TextGenerationSettings


def warm_up(engine: Engine, tokens: int) -> None:
    """Prefill a short prompt and decode `tokens` steps at full batch width, then free all."""
    slots = []
    try:
        while engine.free_slots() > 0:
            slots.append(engine.allocate())
        engine.prefill_many(slots, [[0, 1, 2, 3]] * len(slots))
        for _ in range(tokens):
            engine.decode(slots, [0] * len(slots))
            engine.decode(slots[:1], [0])
    finally:
        for slot in slots:
            engine.release(slot)


def ready_scheduler(
    folder: Path, settings: TextGenerationSettings, metrics: GenerationMetrics | None = None
) -> Scheduler:
    """A warmed-up engine behind a (not yet started) scheduler; blocking, run it off the loop.

    The same start-up serves the in-thread mode and the engine process, so both generate
    the same tokens for the same seed.
    """
    threadpool_limits(limits=settings.blas_threads, user_api="blas")
    engine = GPT2Engine.from_pretrained(folder, max_slots=settings.max_running)
    if settings.warmup_tokens:
        warm_up(engine, settings.warmup_tokens)
    return Scheduler(
        engine,
        max_running=settings.max_running,
        max_waiting=settings.max_waiting,
        prefill_chunk_tokens=settings.prefill_chunk_tokens,
        auto_stream_step=settings.auto_stream_step,
        metrics=metrics,
    )
