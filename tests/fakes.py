"""A fake engine for scheduler tests: logits depend only on each slot's own tokens."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np


class FakeEngine:
    """Implements the scheduler's Engine protocol and records every call."""

    def __init__(self, vocab_size: int, max_slots: int, fail_on_decode: bool = False) -> None:
        self.vocab_size = vocab_size
        self.max_slots = max_slots
        self.tokens: dict[int, list[int]] = {}
        self.free = list(range(max_slots))
        self.prefill_calls: list[tuple[int, int]] = []  # (slot, chunk length)
        self.prefill_batches: list[list[int]] = []  # slots of each prefill forward
        self.decode_calls: list[list[int]] = []  # slots of each batched decode
        self.fail_on_decode = fail_on_decode
        self.fail_on: set[str] = set()
        """Calls that raise: "prefill" each time, "allocate" once."""

    def allocate(self) -> int:
        if "allocate" in self.fail_on:
            self.fail_on.discard("allocate")
            raise RuntimeError("out of memory")
        slot = self.free.pop(0)
        self.tokens[slot] = []
        return slot

    def release(self, slot: int) -> None:
        del self.tokens[slot]
        self.free.append(slot)

    def free_slots(self) -> int:
        return len(self.free)

    def prefill_many(self, slots: Sequence[int], token_ids: Sequence[Sequence[int]]) -> np.ndarray:
        if "prefill" in self.fail_on:
            raise RuntimeError("boom")
        self.prefill_batches.append(list(slots))
        for slot, chunk in zip(slots, token_ids, strict=True):
            self.prefill_calls.append((slot, len(chunk)))
            self.tokens[slot].extend(chunk)
        return np.stack([self._logits(slot) for slot in slots])

    def decode(
        self,
        slots: Sequence[int],
        token_ids: Sequence[int],
        between_layers: Callable[[], object] | None = None,
    ) -> np.ndarray:
        if self.fail_on_decode:
            raise RuntimeError("boom")
        self.decode_calls.append(list(slots))
        if between_layers is not None:  # one layer boundary
            between_layers()
        for slot, token in zip(slots, token_ids, strict=True):
            self.tokens[slot].append(token)
        return np.stack([self._logits(slot) for slot in slots])

    def _logits(self, slot: int) -> np.ndarray:
        seq = self.tokens[slot]
        seed = (sum(seq) * 1_000_003 + len(seq)) % (2**32)
        return np.random.default_rng(seed).standard_normal(self.vocab_size).astype(np.float32)


class CachingFakeEngine(FakeEngine):
    """A FakeEngine whose released slots keep their tokens: `allocate_cached` gives the free
    slot sharing the longest prefix with a new sequence (never all of it), as LlamaCppEngine."""

    def __init__(self, vocab_size: int, max_slots: int) -> None:
        super().__init__(vocab_size, max_slots)
        self.cached: dict[int, list[int]] = {}

    def release(self, slot: int) -> None:
        self.cached[slot] = self.tokens[slot]
        super().release(slot)

    def allocate_cached(self, token_ids: Sequence[int]) -> tuple[int, int]:
        def common(slot: int) -> int:
            held = self.cached.get(slot, [])[: len(token_ids) - 1]
            pairs = zip(held, token_ids[: len(held)], strict=True)
            return next((i for i, (a, b) in enumerate(pairs) if a != b), len(held))

        slot = max(self.free, key=common)
        kept = common(slot)
        self.free.remove(slot)
        self.tokens[slot] = list(token_ids[:kept])
        return slot, kept
