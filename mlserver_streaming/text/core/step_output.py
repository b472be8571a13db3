"""What the engine core returns from a step: the one thing drivers move out of it."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..sample.generation import Delta


@dataclass
class StepOutput:
    """The deltas, admissions and counts of one engine step, or of the part of it handed out
    before the step ended (first tokens leave before the batch decode finishes)."""

    deltas: dict[int, Delta] = field(default_factory=dict)
    """Each request's new text and tokens by request id; a delta with a finish reason is its
    request's last."""
    admitted: dict[int, float] = field(default_factory=dict)
    """Requests that got a KV slot, by request id: seconds each waited for it."""
    prompt_tokens: int = 0
    """Prompt tokens prefilled (chunks as they run, not whole prompts at admission)."""
    running: int = 0
    """Sequences holding a KV slot when this output was taken."""
    waiting: int = 0
    """Requests waiting for a slot when this output was taken."""
    step_done: bool = False
    """True on the output that ends a step (False on the parts handed out mid-step)."""

    def add(self, request_id: int, delta: Delta) -> None:
        """Record a request's delta; a second one in the same output extends the first."""
        earlier = self.deltas.get(request_id)
        if earlier is None:
            self.deltas[request_id] = delta
        else:
            earlier.extend(delta)

    def take(self) -> StepOutput:
        """Move what is collected so far into a new output (to hand out mid-step)."""
        part = StepOutput(self.deltas, self.admitted, self.prompt_tokens)
        self.deltas, self.admitted, self.prompt_tokens = {}, {}, 0
        return part

    @property
    def empty(self) -> bool:
        """Nothing for any request (counts aside)."""
        return not (self.deltas or self.admitted or self.prompt_tokens)
