"""Engine warm-up at load, so the first real request pays no cold start."""

from __future__ import annotations

from ...engine.seams import Engine


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
