"""LlamaSeqs: slots over llama.cpp sequences, and a slot moved into a gap that stays.

Its bookkeeping against a stand-in for llama.cpp's calls; the move itself on the shipped
shakespeare GGUF, where a slot that moves must decode what it would have decoded in place."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mlserver_streaming.engine.llama_seqs import LlamaSeqs
from mlserver_streaming.engine.prefix_cache import SlotPrefixes
from mlserver_streaming.engine.seams import NoFreeSlotError, SlotError
from mlserver_streaming.engine.seq_runs import MIN_IDLE_STEPS

F16 = Path(__file__).resolve().parents[2] / "model-repo/shakespeare-gguf/f16/shakespeare-f16.gguf"


class FakeLib:
    """The llama.cpp calls LlamaSeqs makes: removals are recorded, a state copy succeeds
    unless ``refuse`` is set."""

    def __init__(self, refuse: bool = False) -> None:
        self.refuse, self.removed, self.copied = refuse, [], []

    def llama_get_memory(self, ctx: Any) -> str:
        return "memory"

    def llama_memory_seq_rm(self, memory: Any, seq: int, p0: int, p1: int) -> bool:
        self.removed.append((seq, p0))
        return True

    def llama_memory_seq_pos_min(self, memory: Any, seq: int) -> int:
        return 0

    def llama_state_seq_get_size_ext(self, ctx: Any, seq: int, flags: int) -> int:
        return 64

    def llama_state_seq_get_data_ext(self, ctx: Any, data: Any, size: int, seq: int, f: int) -> int:
        return size

    def llama_state_seq_set_data_ext(self, ctx: Any, data: Any, size: int, seq: int, f: int) -> int:
        self.copied.append(seq)
        return 0 if self.refuse else size


def table(lib: FakeLib, slots: int = 4) -> LlamaSeqs:
    return LlamaSeqs(lib, "ctx", slots, 16, SlotPrefixes(slots, 16, compact=True))


def test_a_move_gives_the_slot_another_sequence_and_keeps_the_old_cells() -> None:
    lib = FakeLib()
    seqs = table(lib)
    for seq in range(4):
        assert seqs.claim(seq, 0) == seq
        seqs.lengths[seq] = 3 + seq
        seqs.prefixes.tokens[seq, : 3 + seq] = 10 * seq  # type: ignore[union-attr]
    seqs.release(1)
    assert seqs.move(3, 1)
    assert lib.copied == [1] and lib.removed == []  # sequence 3 keeps its cells
    assert seqs.seq_of.tolist() == [0, 3, 2, 1]  # slot 3 now on sequence 1, slot 1 on 3
    assert seqs.slot_of.tolist() == [0, 3, 2, 1]
    assert seqs.in_use.tolist() == [True, True, True, False]  # by sequence
    assert seqs.lengths[1] == 6 and seqs.prefixes.tokens[1, :6].tolist() == [30] * 6  # type: ignore[union-attr]
    seqs.check([3], [10])  # slot 3 is in use, with room for 10 more of 16
    with pytest.raises(SlotError, match="slot 1 is not allocated"):
        seqs.check([1], [1])
    seqs.release(3)  # by slot: frees sequence 1
    assert seqs.in_use.tolist() == [True, False, True, False]


def test_a_refused_move_changes_no_slot_and_empties_the_destination() -> None:
    lib = FakeLib(refuse=True)
    seqs = table(lib)
    for seq in (0, 2):
        seqs.claim(seq, 0)
        seqs.lengths[seq] = 5
    seqs.lengths[1] = 4  # cached, free
    assert not seqs.move(2, 1)
    assert seqs.seq_of.tolist() == [0, 1, 2, 3] and seqs.in_use.tolist() == [
        True,
        False,
        True,
        False,
    ]
    assert lib.removed == [(1, -1)] and seqs.lengths[1] == 0 and seqs.lengths[2] == 5


def test_compact_waits_for_a_gap_to_stay_free() -> None:
    seqs = table(FakeLib())
    for seq in range(3):
        seqs.claim(seq, 0)
    seqs.release(1)
    running = np.array([0, 2], np.int32)
    for _ in range(MIN_IDLE_STEPS - 1):
        seqs.steps += 1
        assert not seqs.compact(running)
    seqs.steps += 1
    assert seqs.compact(running) and seqs.moves == 1
    assert seqs.seq_of[[0, 2]].tolist() == [0, 1]  # slot 2 decodes on sequence 1


def test_no_free_sequence() -> None:
    seqs = table(FakeLib(), slots=1)
    seqs.claim(0, 0)
    with pytest.raises(NoFreeSlotError, match="all 1 sequences are in use"):
        seqs.free()


needs_gguf = pytest.mark.skipif(not F16.is_file(), reason="no shakespeare-gguf")


@needs_gguf
def test_a_slot_moved_into_a_gap_decodes_as_it_would_have_in_place() -> None:
    """Slots 0, 2 and 5 decode with 1, 3 and 4 free; after MIN_IDLE_STEPS steps slot 5
    moves to sequence 1 and the steps are one run (no pads asked for: max_pad 0). Every
    slot's greedy ids equal its prompt's alone; sequence 5 keeps slot 5's prompt cached."""
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
    from mlserver_streaming.engine.llama_cpp import LlamaCppEngine

    engine = LlamaCppEngine.from_gguf(F16, max_slots=6, threads=1, unified_kv=False)
    engine.max_pad = 0  # a gap costs a pass: only a move makes the step one run
    try:
        texts = ["KING:\n", "Hark! what noise?", "ROMEO:\nWhat light through yonder"]
        prompts = [[engine.bos_token_id, *engine.tokenizer.encode(t)] for t in texts]
        alone = []
        for ids in prompts:
            slot = engine.allocate()
            alone.append(greedy(engine, [slot], [ids], 10)[0])
            engine.release(slot)
        assert [engine.allocate() for _ in range(6)] == list(range(6))
        for slot in (1, 3, 4):
            engine.release(slot)
        sent: list[list[int]] = []
        outs = greedy(engine, [0, 2, 5], prompts, 10, sent)
        assert outs == alone
        assert engine.seqs.moves == 1 and engine.seqs.seq_of[5] == 1
        assert sent[0] == [0, 2, 5] and sent[-1] == [0, 1, 2]  # one run after the move
        assert [engine.length(s) for s in (0, 2, 5)] == [len(p) + 9 for p in prompts]
        engine.release(5)
        slot, kept = engine.allocate_cached(prompts[2])
        assert kept == len(prompts[2]) - 1  # from sequence 5, or from 1 where it went
    finally:
        engine.close()


def greedy(
    engine: Any, slots: list[int], prompts: list[list[int]], n: int, sent: list | None = None
) -> list[list[int]]:
    """Greedy ids of each slot's prompt decoded together; ``sent`` gets each decode's
    sequence ids as llama.cpp received them."""
    logits = engine.prefill_many(slots, prompts)
    outs = [[int(t)] for t in logits.argmax(axis=1)]
    for _ in range(n - 1):
        logits = engine.decode(slots, [o[-1] for o in outs])
        if sent is not None:
            batch = engine._batch
            sent.append(batch.arrays["seq"][: batch.batch.n_tokens].tolist())
        for out, token in zip(outs, logits.argmax(axis=1), strict=True):
            out.append(int(token))
    return outs


@needs_gguf
@pytest.mark.parametrize("unified", [False, True])
def test_a_prompt_running_in_another_slot_is_copied_not_prefilled(unified: bool) -> None:
    """Slot 0 runs a prompt; a request that begins with it gets those cells copied into
    its own slot: only the rest is prefilled, and both decode what each would alone."""
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
    from mlserver_streaming.engine.llama_cpp import LlamaCppEngine

    engine = LlamaCppEngine.from_gguf(F16, max_slots=3, threads=1, unified_kv=unified)
    try:
        ids = [engine.bos_token_id, *engine.tokenizer.encode("ROMEO:\nWhat light through")]
        longer = ids + engine.tokenizer.encode(" yonder window breaks?")
        alone = []
        for prompt in (ids, longer):
            slot = engine.allocate()
            alone.append(greedy(engine, [slot], [prompt], 8)[0])
            engine.release(slot)
        engine._lib.llama_memory_seq_rm(engine._memory, -1, -1, -1)
        engine.seqs.lengths[:] = 0  # nothing cached: only a slot in use can give the prefix
        first, kept = engine.allocate_cached(ids)
        assert kept == 0
        out = [int(np.argmax(engine.prefill_many([first], [ids])[0]))]
        second, kept = engine.allocate_cached(longer)
        assert second != first and kept == len(ids) and engine.seqs.copied == 1
        logits = engine.prefill_many([second], [longer[kept:]])
        both = [out, [int(np.argmax(logits[0]))]]
        for _ in range(7):
            logits = engine.decode([first, second], [both[0][-1], both[1][-1]])
            for row, token in zip(both, logits.argmax(axis=1), strict=True):
                row.append(int(token))
        assert both == alone
    finally:
        engine.close()
