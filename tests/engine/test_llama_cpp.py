"""LlamaCppEngine against the numpy GPT2Engine on the shipped shakespeare checkpoint, its KV
slots, its load errors and its tokenizer; and a tiny random Llama-architecture GGUF."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip(
    "llama_cpp", reason="llama-cpp-python is not installed (pip install '.[llama]')"
)

from mlserver_streaming.engine import GPT2Engine  # noqa: E402
from mlserver_streaming.engine.llama_cpp import LlamaCppEngine  # noqa: E402
from mlserver_streaming.engine.seams import SequenceTooLongError, SlotError  # noqa: E402
from mlserver_streaming.errors import InvalidSettings  # noqa: E402
from mlserver_streaming.text.model_folder import open_model_folder  # noqa: E402
from mlserver_streaming.text.settings import TextGenerationSettings  # noqa: E402
from tests.gguf_fixtures import BOS, CHAT_TEMPLATE, EOS, write_tiny_llama  # noqa: E402

REPO = Path(__file__).resolve().parents[2] / "model-repo"
NUMPY_MODEL = REPO / "shakespeare"
F16 = REPO / "shakespeare-gguf" / "f16" / "shakespeare-f16.gguf"
Q8_0 = REPO / "shakespeare-gguf" / "q8_0" / "shakespeare-q8_0.gguf"
PROMPT = "ROMEO:\nWhat light through yonder window breaks?\n"

needs_gguf = pytest.mark.skipif(
    not F16.is_file(), reason="run training/convert_gguf.py to build model-repo/shakespeare-gguf"
)


@pytest.fixture(scope="module")
def f16() -> LlamaCppEngine:
    return LlamaCppEngine.from_gguf(F16, max_slots=8, threads=1)


@pytest.fixture(scope="module")
def numpy_engine() -> GPT2Engine:
    return GPT2Engine.from_pretrained(NUMPY_MODEL, max_slots=2)


def prompt_ids(engine: LlamaCppEngine, text: str = PROMPT) -> list[int]:
    return [engine.bos_token_id, *engine.tokenizer.encode(text)]


def greedy(engine: LlamaCppEngine | GPT2Engine, ids: list[int], n: int) -> list[int]:
    slot = engine.allocate()
    try:
        return greedy_in(engine, slot, ids, n)
    finally:
        engine.release(slot)


def cached_greedy(engine: LlamaCppEngine, ids: list[int], n: int) -> tuple[int, list[int]]:
    """How many of `ids` the slot allocate_cached gave already held, and the greedy ids."""
    slot, kept = engine.allocate_cached(ids)
    try:
        return kept, greedy_in(engine, slot, ids[kept:], n)
    finally:
        engine.release(slot)


def greedy_in(engine: LlamaCppEngine | GPT2Engine, slot: int, ids: list[int], n: int) -> list[int]:
    out = [int(np.argmax(engine.prefill_many([slot], [ids])[0]))]
    while len(out) < n:
        out.append(int(np.argmax(engine.decode([slot], [out[-1]])[0])))
    return out


@needs_gguf
def test_metadata(f16: LlamaCppEngine) -> None:
    assert (f16.vocab_size, f16.context_length) == (4096, 256)
    assert f16.bos_token_id == f16.eos_token_id == 0
    assert f16.add_bos and f16.architecture == "gpt2"
    # The converter carries the folder's play-script chat template into the GGUF.
    template = json.loads((REPO / "shakespeare" / "tokenizer_config.json").read_text())
    assert f16.chat_template == template["chat_template"]


@needs_gguf
def test_tokenizer_matches_tokenizers_json(f16: LlamaCppEngine) -> None:
    from tokenizers import Tokenizer

    reference = Tokenizer.from_file(str(NUMPY_MODEL / "tokenizer.json"))
    text = PROMPT + "  café, 東京 🎭\n\tO, she doth teach the torches to burn bright!"
    ids = f16.tokenizer.encode(text)
    assert ids == reference.encode(text, add_special_tokens=False).ids
    assert f16.tokenizer.decode(ids) == text
    assert f16.tokenizer.decode([0, *ids, 0]) == text  # <|endoftext|> is skipped
    assert f16.tokenizer.decode([0], skip_special_tokens=False) == "<|endoftext|>"
    assert f16.tokenizer.decode([0]) == ""  # the cached special and plain pieces stay apart
    for bad in (-1, f16.vocab_size):
        with pytest.raises(ValueError, match=rf"token id must be in \[0, {f16.vocab_size}\)"):
            f16.tokenizer.decode([bad])


@needs_gguf
def test_multibyte_character_is_replacement_until_complete(f16: LlamaCppEngine) -> None:
    ids = f16.tokenizer.encode("🎭")
    assert len(ids) > 1  # the emoji's 4 bytes are split over several byte tokens
    assert f16.tokenizer.decode(ids[:-1]).endswith("\ufffd")
    assert f16.tokenizer.decode(ids) == "🎭"


@needs_gguf
def test_greedy_matches_numpy_engine(f16: LlamaCppEngine, numpy_engine: GPT2Engine) -> None:
    ids = prompt_ids(f16)
    assert greedy(f16, ids, 64) == greedy(numpy_engine, ids, 64)


@needs_gguf
def test_logits_close_to_numpy_engine(f16: LlamaCppEngine, numpy_engine: GPT2Engine) -> None:
    ids = prompt_ids(f16)
    a, b = f16.allocate(), numpy_engine.allocate()
    try:
        ours, ref = f16.prefill_many([a], [ids])[0], numpy_engine.prefill_many([b], [ids])[0]
        assert ours.dtype == np.float32 and ours.shape == (4096,)
        np.testing.assert_allclose(ours, ref, atol=0.01)  # f16 weights, f16 KV: 1.5e-3 seen
        ours, ref = f16.decode([a], [7])[0], numpy_engine.decode([b], [7])[0]
        np.testing.assert_allclose(ours, ref, atol=0.01)
    finally:
        f16.release(a)
        numpy_engine.release(b)


@needs_gguf
def test_batched_decode_at_different_positions_equals_each_alone(f16: LlamaCppEngine) -> None:
    prompts = [prompt_ids(f16, t) for t in ("KING:\n", "Hark! what noise?", PROMPT, "A")]
    alone = [greedy(f16, ids, 8) for ids in prompts]
    assert batched_greedy(f16, prompts, 8) == alone


def batched_greedy(engine: LlamaCppEngine, prompts: list[list[int]], n: int) -> list[list[int]]:
    """Greedy ids of several prompts decoded together, each slot at its own position."""
    slots = [engine.allocate() for _ in prompts]
    try:
        logits = engine.prefill_many(slots, prompts)
        outs = [[int(t)] for t in logits.argmax(axis=1)]
        for _ in range(n - 1):
            logits = engine.decode(slots, [o[-1] for o in outs])
            assert logits.shape == (len(slots), engine.vocab_size) and np.isfinite(logits).all()
            for out, token in zip(outs, logits.argmax(axis=1), strict=True):
                out.append(int(token))
        return outs
    finally:
        for slot in slots:
            engine.release(slot)


@needs_gguf
def test_split_kv_gives_the_same_greedy_ids_with_gaps_between_slots(f16: LlamaCppEngine) -> None:
    """One KV buffer per sequence: llama.cpp batches only consecutive sequence ids, so slots
    0, 2 and 4 decode in three ubatches; the ids are those of each prompt alone."""
    prompts = [prompt_ids(f16, t) for t in ("KING:\n", "Hark! what noise?", PROMPT)]
    alone = [greedy(f16, ids, 8) for ids in prompts]
    split = LlamaCppEngine.from_gguf(F16, max_slots=6, threads=1, unified_kv=False)
    try:
        taken = [split.allocate() for _ in range(6)]
        for slot in (0, 2, 4):
            split.release(slot)
        assert batched_greedy(split, prompts, 8) == alone
        assert taken == list(range(6))
    finally:
        split.close()


@needs_gguf
def test_split_kv_pads_gaps_and_leaves_the_gap_slots_as_they_were() -> None:
    """Split KV decodes slots 0, 2 and 5 (in that order: 5, 0, 2) as one run with pads in
    1, 3 and 4 (seq_runs.py): the same logits as three unpadded passes, rows in the caller's
    order, and the gap slots' cells, cached or in use, exactly as before the step."""
    engine = LlamaCppEngine.from_gguf(F16, max_slots=6, threads=1, unified_kv=False)
    assert 0 <= engine.max_pad <= 6  # what a pass costs in rows here, timed at load
    engine.max_pad = 2  # pad both gaps, whatever this machine's timing said
    engine._compact = False  # slots stay on their sequences: the test rewinds them by id
    try:
        lib, memory = engine._lib, engine._memory
        for slot in range(6):  # every slot with a prompt of its own length
            assert engine.allocate() == slot
            engine.prefill_many([slot], [prompt_ids(engine, "KING:\n" + "ab " * slot)])
        for slot in (1, 4):
            engine.release(slot)  # cached, free; 3 stays in use, not decoding
        before = [lib.llama_memory_seq_pos_max(memory, s) for s in range(6)]
        lengths = engine._lengths.tolist()
        running, tokens = [5, 0, 2], [11, 12, 13]
        padded = engine.decode(running, tokens)
        sent = engine._batch.arrays["seq"][: engine._batch.batch.n_tokens]
        assert sent.tolist() == [0, 1, 2, 3, 4, 5]  # one run: one ubatch, one pass
        for slot in running:  # the same step unpadded: back to where it was, then again
            lib.llama_memory_seq_rm(memory, slot, lengths[slot], -1)
            engine._lengths[slot] = lengths[slot]
        engine._pad = False
        unpadded = engine.decode(running, tokens)
        np.testing.assert_allclose(padded, unpadded, atol=1e-3)
        alone = []
        for slot, token in zip(running, tokens, strict=True):
            lib.llama_memory_seq_rm(memory, slot, lengths[slot], -1)
            engine._lengths[slot] = lengths[slot]
            alone.append(engine.decode([slot], [token])[0])
        np.testing.assert_allclose(padded, np.stack(alone), atol=1e-3)
        after = [lib.llama_memory_seq_pos_max(memory, s) for s in range(6)]
        assert [after[s] for s in (1, 3, 4)] == [before[s] for s in (1, 3, 4)]
        assert [after[s] for s in running] == [before[s] + 1 for s in running]
        ids = prompt_ids(engine, "KING:\n" + "ab " * 4)
        assert cached_greedy(engine, ids, 4)[0] == len(ids) - 1  # slot 4's cache still whole
    finally:
        engine.close()


@needs_gguf
def test_released_slot_is_as_good_as_new(f16: LlamaCppEngine) -> None:
    ids = prompt_ids(f16)
    fresh = greedy(f16, ids, 6)
    slot = f16.allocate()
    f16.prefill_many([slot], [prompt_ids(f16, "something else entirely, at length " * 4)])
    f16.release(slot)
    assert f16.allocate() == slot  # the lowest free slot comes back
    f16.release(slot)
    assert greedy(f16, ids, 6) == fresh


@needs_gguf
def test_a_released_prompt_is_reused_with_the_same_greedy_ids(f16: LlamaCppEngine) -> None:
    engine = LlamaCppEngine.from_gguf(F16, max_slots=3, threads=1)
    ids, other = prompt_ids(f16), prompt_ids(f16, "KING:\nNo, not a word of it")
    fresh = greedy(f16, ids, 16)
    assert cached_greedy(engine, ids, 16) == (0, fresh)  # nothing cached yet
    assert cached_greedy(engine, other, 4)[0] == 0  # shares only BOS: takes another slot
    assert cached_greedy(engine, ids, 16) == (len(ids) - 1, fresh)  # all but the last token
    # A follow-up that holds the earlier answer (a chat's next turn) reuses that too.
    assert cached_greedy(engine, ids + fresh[:5], 8) == (len(ids) + 4, fresh[5:13])
    assert cached_greedy(engine, ids[:7] + other[-3:], 1)[0] == 7  # diverges: cut at 7
    assert engine.length(engine.allocate()) == 0  # allocate() never reuses


@needs_gguf
def test_split_kv_keeps_a_rotation_of_prompts_cached_at_one_stream() -> None:
    """Split KV's slot choice at one stream: nothing else runs, so each prompt of a rotation
    keeps its own slot and comes back to it, with the same greedy ids as fresh."""
    engine = LlamaCppEngine.from_gguf(F16, max_slots=4, threads=1, unified_kv=False)
    texts = ["ROMEO:\n", "JULIET:\nO Romeo, Romeo!", "KING LEAR:\nBlow, winds,"]
    prompts = [prompt_ids(engine, text) for text in texts]
    first = [cached_greedy(engine, ids, 6) for ids in prompts]
    again = [cached_greedy(engine, ids, 6) for ids in prompts]
    assert [kept for kept, _ in again] == [len(ids) - 1 for ids in prompts]
    assert [out for _, out in again] == [out for _, out in first]


@needs_gguf
@pytest.mark.parametrize("prefix_cache", [True, False])
def test_the_prefix_cache_setting_decides_what_a_released_slot_keeps(prefix_cache: bool) -> None:
    settings = TextGenerationSettings(max_running=2, threads=1, prefix_cache=prefix_cache)
    engine = open_model_folder(F16, settings, "poet").engine(settings)
    assert isinstance(engine, LlamaCppEngine)
    ids = prompt_ids(engine)
    first = cached_greedy(engine, ids, 8)
    again = cached_greedy(engine, ids, 8)
    assert first[0] == 0 and again == ((len(ids) - 1 if prefix_cache else 0), first[1])


def test_tiny_llama_reuses_a_prefix_at_its_positions(tiny_llama: LlamaCppEngine) -> None:
    ids = [tiny_llama.bos_token_id, *tiny_llama.tokenizer.encode("hello the world of ab")]
    fresh = greedy(tiny_llama, ids, 6)
    assert cached_greedy(tiny_llama, ids, 6)[1] == fresh
    assert cached_greedy(tiny_llama, ids, 6) == (len(ids) - 1, fresh)  # RoPE'd keys reused


@needs_gguf
def test_chunked_prefill_equals_one_shot(f16: LlamaCppEngine) -> None:
    ids = prompt_ids(f16)
    a, b, c = f16.allocate(), f16.allocate(), f16.allocate()
    try:
        whole = f16.prefill_many([a], [ids])[0]
        f16.prefill_many([b], [ids[:5]])
        f16.prefill_many([b], [ids[5:9]])
        last = f16.prefill_many([b], [ids[9:]])[0]
        np.testing.assert_allclose(last, whole, atol=1e-3)
        # chunks of one token (a cached prompt's last) go the decode path: same numbers
        f16.prefill_many([c], [ids[:-2]])
        f16.prefill_many([c], [ids[-2:-1]])
        np.testing.assert_allclose(f16.prefill_many([c], [ids[-1:]])[0], whole, atol=1e-3)
        assert f16.length(a) == f16.length(b) == f16.length(c) == len(ids)
    finally:
        f16.release(a)
        f16.release(b)
        f16.release(c)


@needs_gguf
def test_a_step_longer_than_batch_tokens_is_split(f16: LlamaCppEngine) -> None:
    small = LlamaCppEngine.from_gguf(F16, max_slots=2, threads=1, batch_tokens=8)
    ids = prompt_ids(f16)
    slots = [small.allocate(), small.allocate()]
    logits = small.prefill_many(slots, [ids, ids[:3]])
    a, b = f16.allocate(), f16.allocate()
    try:
        ref = f16.prefill_many([a, b], [ids, ids[:3]])
    finally:
        f16.release(a)
        f16.release(b)
    np.testing.assert_allclose(logits, ref, atol=1e-3)


@needs_gguf
def test_q8_0_prefill_and_batched_decode_close_to_f16(f16: LlamaCppEngine) -> None:
    q8 = LlamaCppEngine.from_gguf(Q8_0, max_slots=12, threads=2)
    prompts = [prompt_ids(f16, f"{name}:\n{name} {name}, my lord") for name in "ABCDEFGHIJKL"]
    slots_q, slots_f = [q8.allocate() for _ in prompts], [f16.allocate() for _ in prompts[:8]]
    try:
        q_logits = q8.prefill_many(slots_q, prompts)  # one batched Q8_0 prefill of 12 prompts
        f_logits = f16.prefill_many(slots_f, prompts[:8])
        assert np.abs(q_logits[:8] - f_logits).max() < 0.5
        assert (q_logits[:8].argmax(axis=1) == f_logits.argmax(axis=1)).mean() >= 0.75
        tokens = q_logits.argmax(axis=1).tolist()
        for _ in range(4):
            q_logits = q8.decode(slots_q, tokens)  # batched Q8_0 decode of 12 slots
            assert np.isfinite(q_logits).all()
            tokens = q_logits.argmax(axis=1).tolist()
    finally:
        for slot in slots_f:
            f16.release(slot)


@needs_gguf
def test_slot_and_length_errors(f16: LlamaCppEngine) -> None:
    slot = f16.allocate()
    try:
        with pytest.raises(SlotError, match="not allocated"):
            f16.decode([7], [1])
        with pytest.raises(SlotError, match="distinct"):
            f16.prefill_many([slot, slot], [[1], [2]])
        with pytest.raises(SequenceTooLongError, match="above context_length=256"):
            f16.prefill_many([slot], [[1] * 257])
        with pytest.raises(ValueError, match=r"token ids must be in \[0, 4096\)"):
            f16.decode([slot], [4096])
        assert f16.length(slot) == 0  # nothing was appended by the failed calls
    finally:
        f16.release(slot)


def test_not_a_gguf_file_is_refused_with_its_name(tmp_path: Path) -> None:
    path = tmp_path / "model.gguf"
    path.write_bytes(b"PK\x03\x04 this is a zip")
    with pytest.raises(InvalidSettings, match=r"model\.gguf is not a GGUF file.*got b'PK"):
        LlamaCppEngine.from_gguf(path, max_slots=1)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidSettings, match="does not exist"):
        LlamaCppEngine.from_gguf(tmp_path / "nope.gguf", max_slots=1)


@needs_gguf
def test_context_larger_than_the_models_is_refused() -> None:
    with pytest.raises(InvalidSettings, match=r"shakespeare-f16\.gguf.*n_ctx_train=256.*got 512"):
        LlamaCppEngine.from_gguf(F16, max_slots=1, context_per_slot=512)


@pytest.mark.parametrize("size", ["max_slots", "batch_tokens", "threads"])
def test_a_size_below_one_is_refused_by_name(size: str) -> None:
    sizes = {"max_slots": 2, size: 0}
    with pytest.raises(InvalidSettings, match=rf"{size} must be >= 1, got 0"):
        LlamaCppEngine.from_gguf(F16, **sizes)  # type: ignore[arg-type]


def test_unknown_architecture_is_refused(tmp_path: Path) -> None:
    import gguf

    path = tmp_path / "alien.gguf"
    writer = gguf.GGUFWriter(str(path), "alienformer")
    writer.add_tensor("token_embd.weight", np.zeros((4, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(InvalidSettings, match=r"alien\.gguf.*architecture 'alienformer'"):
        LlamaCppEngine.from_gguf(path, max_slots=1)


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> LlamaCppEngine:
    path = write_tiny_llama(tmp_path_factory.mktemp("gguf") / "tiny-llama.gguf")
    return LlamaCppEngine.from_gguf(path, max_slots=4, threads=1)


def test_tiny_llama_loads_with_its_metadata(tiny_llama: LlamaCppEngine) -> None:
    assert tiny_llama.architecture == "llama" and tiny_llama.context_length == 128
    assert tiny_llama.chat_template == CHAT_TEMPLATE
    assert tiny_llama.tokenizer.decode([tiny_llama.eos_token_id], False) == EOS
    assert tiny_llama.tokenizer.decode([tiny_llama.bos_token_id], False) == BOS
    ids = tiny_llama.tokenizer.encode("hello the world")
    assert tiny_llama.tokenizer.decode([tiny_llama.bos_token_id, *ids]) == "hello the world"
    assert len(ids) < len("hello the world")  # merges were applied


def test_tiny_llama_prefills_and_decodes_several_slots(tiny_llama: LlamaCppEngine) -> None:
    prompts = [[tiny_llama.bos_token_id, *tiny_llama.tokenizer.encode(t)] for t in ("ab", "xyz q")]
    alone = [greedy(tiny_llama, ids, 5) for ids in prompts]
    assert alone[0] != alone[1]  # random weights, yet the outputs depend on the prompt
    assert batched_greedy(tiny_llama, prompts, 5) == alone


@needs_gguf
def test_truncated_gguf_is_refused_as_damaged(tmp_path: Path) -> None:
    path = tmp_path / "cut.gguf"
    path.write_bytes(F16.read_bytes()[:100_000])
    with pytest.raises(InvalidSettings, match=r"cannot load .*cut\.gguf.*damaged or incomplete"):
        LlamaCppEngine.from_gguf(path, max_slots=1)
