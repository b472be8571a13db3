"""The numpy engine against transformers as the reference, on tiny random checkpoints."""

import copy
import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file, save_file
from tokenizers import Tokenizer
from transformers import GPT2Config as HFConfig
from transformers import GPT2LMHeadModel

from mlserver_streaming.engine import (
    CheckpointError,
    GPT2Config,
    GPT2Engine,
    NoFreeSlotError,
    SequenceTooLongError,
    SlotError,
    UnsupportedModelError,
    load_weights,
)
from mlserver_streaming.engine import gpt2 as gpt2_module

# A wide initializer spreads the logits, so greedy choices are never near-ties.
TINY = dict(vocab_size=97, n_positions=64, n_embd=64, n_layer=2, n_head=4, initializer_range=0.2)
TINY_SPECIAL = dict(bos_token_id=95, eos_token_id=96)
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
PROMPT = [5, 17, 3, 90, 42, 8, 11, 60, 2, 33, 71]
ATOL = 1e-4
SHAKESPEARE = Path(__file__).parents[2] / "model-repo" / "shakespeare"


def save_tiny(folder: Path, dtype: torch.dtype = torch.float32, **overrides) -> Path:
    torch.manual_seed(0)
    model = GPT2LMHeadModel(HFConfig(**{**TINY, **TINY_SPECIAL, **overrides}))
    model.to(dtype).save_pretrained(folder, safe_serialization=True)
    return folder


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    return {name: save_tiny(tmp_path_factory.mktemp(name), dt) for name, dt in DTYPES.items()}


@pytest.fixture(scope="module")
def hf_models(checkpoints) -> dict[str, GPT2LMHeadModel]:
    # Always computed in fp32, from exactly the (possibly half-precision) weights on disk.
    return {
        name: GPT2LMHeadModel.from_pretrained(folder, dtype=torch.float32).eval()
        for name, folder in checkpoints.items()
    }


@pytest.fixture
def engine(checkpoints) -> GPT2Engine:
    return GPT2Engine.from_pretrained(checkpoints["float32"], max_slots=4)


def hf_last_logits(model: GPT2LMHeadModel, ids: list[int]) -> np.ndarray:
    with torch.inference_mode():
        return model(torch.tensor([ids])).logits[0, -1].numpy()


def hf_greedy(model: GPT2LMHeadModel, ids: list[int], n_new: int) -> list[int]:
    model.generation_config.eos_token_id = None  # run the full n_new, like engine_greedy
    with torch.inference_mode():
        out = model.generate(
            torch.tensor([ids]), do_sample=False, max_new_tokens=n_new, pad_token_id=0
        )
    return out[0, len(ids) :].tolist()


def engine_greedy(engine: GPT2Engine, ids: list[int], n_new: int) -> list[int]:
    slot = engine.allocate()
    out = [int(engine.prefill(slot, ids).argmax())]
    while len(out) < n_new:
        out.append(int(engine.decode([slot], [out[-1]])[0].argmax()))
    engine.release(slot)
    return out


# --- agreement with transformers -------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_last_logits_match_transformers(checkpoints, hf_models, dtype):
    engine = GPT2Engine.from_pretrained(checkpoints[dtype])
    logits = engine.prefill(engine.allocate(), PROMPT)
    assert logits.shape == (TINY["vocab_size"],)
    np.testing.assert_allclose(logits, hf_last_logits(hf_models[dtype], PROMPT), atol=ATOL)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_greedy_tokens_match_generate(checkpoints, hf_models, dtype):
    engine = GPT2Engine.from_pretrained(checkpoints[dtype])
    assert engine_greedy(engine, PROMPT, 20) == hf_greedy(hf_models[dtype], PROMPT, 20)


def test_untied_lm_head_is_used(tmp_path):
    folder = save_tiny(tmp_path, tie_word_embeddings=False)
    assert "lm_head.weight" in load_file(folder / "model.safetensors")
    hf = GPT2LMHeadModel.from_pretrained(folder, dtype=torch.float32).eval()
    engine = GPT2Engine.from_pretrained(folder)
    logits = engine.prefill(engine.allocate(), PROMPT)
    np.testing.assert_allclose(logits, hf_last_logits(hf, PROMPT), atol=ATOL)


@pytest.mark.skipif(
    not all((SHAKESPEARE / f).is_file() for f in ("model.safetensors", "tokenizer.json")),
    reason="no trained shakespeare checkpoint yet",
)
def test_shakespeare_checkpoint_matches_transformers():
    hf = GPT2LMHeadModel.from_pretrained(SHAKESPEARE, dtype=torch.float32).eval()
    engine = GPT2Engine.from_pretrained(SHAKESPEARE, max_slots=1)
    ids = Tokenizer.from_file(str(SHAKESPEARE / "tokenizer.json")).encode("ROMEO:\n").ids
    np.testing.assert_allclose(
        engine.prefill(engine.allocate(), ids), hf_last_logits(hf, ids), atol=ATOL
    )
    engine.release(0)
    assert engine_greedy(engine, ids, 20) == hf_greedy(hf, ids, 20)


# --- cache behaviour: chunking, batching, slot reuse -----------------------------------------


@pytest.mark.parametrize(
    "cuts", [[4], [1, 7], [5, 6, 10]], ids=["2-chunks", "3-chunks", "4-chunks"]
)
def test_chunked_prefill_equals_one_shot(engine, cuts):
    whole = engine.prefill(engine.allocate(), PROMPT)
    slot = engine.allocate()
    for start, stop in zip([0, *cuts], [*cuts, len(PROMPT)], strict=True):
        chunked = engine.prefill(slot, PROMPT[start:stop])
    assert engine.length(slot) == len(PROMPT)
    np.testing.assert_allclose(chunked, whole, atol=1e-5)


@pytest.mark.parametrize(
    "order",
    [[0, 1, 2], [2, 0, 1], [0, 2, 3], [3, 0, 2]],
    ids=["consecutive", "shuffled", "with-gap", "shuffled-with-gap"],
)
def test_batched_decode_equals_decoding_alone(checkpoints, order):
    prompts = {slot: PROMPT[: 3 + 4 * i] for i, slot in enumerate(order)}  # lengths 3, 7, 11
    tokens = [40, 50, 60]
    batch_engine = GPT2Engine.from_pretrained(checkpoints["float32"], max_slots=4)
    for _ in range(4):
        batch_engine.allocate()
    for slot in order:
        batch_engine.prefill(slot, prompts[slot])
    batched = batch_engine.decode(order, tokens)
    assert batched.shape == (3, TINY["vocab_size"])
    alone = GPT2Engine.from_pretrained(checkpoints["float32"], max_slots=1)
    for row, (slot, token) in enumerate(zip(order, tokens, strict=True)):
        alone.prefill(alone.allocate(), prompts[slot])
        np.testing.assert_allclose(batched[row], alone.decode([0], [token])[0], atol=ATOL)
        alone.release(0)
        assert batch_engine.length(slot) == len(prompts[slot]) + 1


def test_sparse_slots_decode_like_consecutive_ones(checkpoints):
    engine = GPT2Engine.from_pretrained(checkpoints["float32"], max_slots=8)
    slots = [engine.allocate() for _ in range(8)]
    for slot in slots:
        engine.prefill(slot, PROMPT[: 2 + slot])
    sparse = engine.decode([7, 0], [4, 9])  # an index array: a gather of two slots
    alone = GPT2Engine.from_pretrained(checkpoints["float32"], max_slots=1)
    for row, (length, token) in enumerate([(9, 4), (2, 9)]):
        alone.prefill(alone.allocate(), PROMPT[:length])
        np.testing.assert_allclose(sparse[row], alone.decode([0], [token])[0], atol=ATOL)
        alone.release(0)


@pytest.mark.parametrize("resume", [False, True], ids=["fresh", "after-a-first-chunk"])
def test_prefill_many_equals_prefilling_each_alone(checkpoints, resume):
    prompts = [PROMPT[:3], PROMPT, PROMPT[:7]]
    many = GPT2Engine.from_pretrained(checkpoints["float32"], max_slots=3)
    one = GPT2Engine.from_pretrained(checkpoints["float32"], max_slots=3)
    slots = [many.allocate() for _ in prompts]
    assert [one.allocate() for _ in prompts] == slots
    start = 2 if resume else 0
    if resume:
        many.prefill_many(slots, [p[:start] for p in prompts])
    together = many.prefill_many(slots, [p[start:] for p in prompts])
    assert together.shape == (3, TINY["vocab_size"])
    for row, (slot, prompt) in enumerate(zip(slots, prompts, strict=True)):
        np.testing.assert_allclose(together[row], one.prefill(slot, prompt), atol=ATOL)
        assert many.length(slot) == len(prompt)
    # The caches hold the same keys: the next decode step agrees too.
    np.testing.assert_allclose(
        many.decode(slots, [1, 2, 3]), one.decode(slots, [1, 2, 3]), atol=ATOL
    )


def test_prefill_between_the_layers_of_a_decode_changes_neither(checkpoints):
    plain = GPT2Engine.from_pretrained(checkpoints["float32"], max_slots=4)
    mixed = GPT2Engine.from_pretrained(checkpoints["float32"], max_slots=4)
    for engine in (plain, mixed):
        for slot in range(4):
            engine.allocate()
            engine.prefill(slot, PROMPT[: 3 + 2 * slot])
        engine.release(1)  # an idle row inside the decode's view; the newcomer takes it
    expected_decode = plain.decode([0, 2, 3], [7, 8, 9])
    expected_prefill = plain.prefill(plain.allocate(), PROMPT)
    calls, newcomer = [], []

    def between_layers() -> None:
        calls.append(len(calls))
        if not newcomer:
            slot = mixed.allocate()
            assert slot == 1
            newcomer.append(mixed.prefill(slot, PROMPT))

    decoded = mixed.decode([0, 2, 3], [7, 8, 9], between_layers)
    assert len(calls) == TINY["n_layer"] - 1
    np.testing.assert_allclose(decoded, expected_decode, atol=1e-6)
    np.testing.assert_allclose(newcomer[0], expected_prefill, atol=1e-6)
    assert [mixed.length(s) for s in range(4)] == [4, len(PROMPT), 8, 10]


def test_released_slot_gives_fresh_results(engine):
    fresh = engine.prefill(engine.allocate(), PROMPT[:4])
    slot = engine.allocate()
    engine.prefill(slot, PROMPT)
    engine.decode([slot], [1])
    engine.release(slot)
    assert engine.length(engine.allocate()) == 0
    np.testing.assert_allclose(engine.prefill(slot, PROMPT[:4]), fresh, atol=1e-6)


def test_logits_and_activations_stay_float32(engine, monkeypatch):
    seen = []

    def spy(fn):
        def wrapped(*args):
            out = fn(*args)
            seen.extend([a.dtype for a in args if isinstance(a, np.ndarray)] + [out.dtype])
            return out

        return wrapped

    monkeypatch.setattr(gpt2_module, "_normalize", spy(gpt2_module._normalize))
    monkeypatch.setattr(gpt2_module, "_gelu", spy(gpt2_module._gelu))
    monkeypatch.setattr(engine, "_block", spy(engine._block))
    slots = [engine.allocate(), engine.allocate()]
    assert engine.prefill(slots[0], PROMPT).dtype == np.float32
    engine.prefill(slots[1], PROMPT[:3])
    assert engine.decode(slots, [1, 2]).dtype == np.float32
    assert seen and set(seen) == {np.dtype(np.float32)}
    assert engine._cache.k.dtype == np.float32


# --- errors ----------------------------------------------------------------------------------


def test_too_many_slots(engine):
    for _ in range(4):
        engine.allocate()
    assert engine.free_slots() == 0
    with pytest.raises(NoFreeSlotError, match="all 4 KV cache slots are in use"):
        engine.allocate()


def test_prefill_beyond_max_seq_len(checkpoints):
    engine = GPT2Engine.from_pretrained(checkpoints["float32"], max_seq_len=12)
    slot = engine.allocate()
    engine.prefill(slot, PROMPT[:10])
    with pytest.raises(SequenceTooLongError, match="holds 10 tokens; adding 3 would make 13"):
        engine.prefill(slot, PROMPT[:3])
    assert engine.length(slot) == 10  # a rejected call leaves the cache untouched


def test_decode_when_full(checkpoints):
    engine = GPT2Engine.from_pretrained(checkpoints["float32"], max_seq_len=12)
    full, other = engine.allocate(), engine.allocate()
    engine.prefill(full, PROMPT[:11])
    engine.prefill(other, PROMPT[:2])
    engine.decode([full], [1])
    with pytest.raises(SequenceTooLongError, match="slot 0 holds 12 tokens.*max_seq_len=12"):
        engine.decode([other, full], [1, 2])


@pytest.mark.parametrize("max_seq_len", [0, 65])
def test_max_seq_len_must_fit_positions(checkpoints, max_seq_len):
    with pytest.raises(ValueError, match=rf"\[1, n_positions=64\], got {max_seq_len}"):
        GPT2Engine.from_pretrained(checkpoints["float32"], max_seq_len=max_seq_len)


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda e: e.prefill(0, []), ValueError, "at least one token"),
        (lambda e: e.prefill(0, [97]), ValueError, r"\[0, 97\), got min 97"),
        (lambda e: e.decode([0], [1, 2]), ValueError, "1 slots and 2 token ids"),
        (lambda e: e.decode([1], [1]), SlotError, "slot 1 is not allocated"),
        (lambda e: e.decode([0, 0], [1, 2]), SlotError, "distinct"),
    ],
    ids=["empty-prefill", "token-out-of-vocab", "length-mismatch", "free-slot", "repeated-slot"],
)
def test_bad_calls_are_rejected(engine, call, error, message):
    engine.allocate()
    with pytest.raises(error, match=message):
        call(engine)


# --- config and checkpoint loading -----------------------------------------------------------


def test_config_from_hf_json(checkpoints):
    config = GPT2Config.from_json(checkpoints["float16"])
    expected = GPT2Config(97, 64, 64, 2, 4, 1e-5, bos_token_id=95, eos_token_id=96)
    assert config == dataclasses.replace(expected, eos_token_ids=(96,))
    assert config.head_dim == 16


def test_a_config_listing_several_eos_ids_stops_on_each(checkpoints, tmp_path):
    raw = json.loads((checkpoints["float16"] / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**raw, "eos_token_id": [96, 94]}))
    config = GPT2Config.from_json(tmp_path)
    assert (config.eos_token_id, config.eos_token_ids) == (96, (96, 94))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"model_type": "llama"}, "model_type must be 'gpt2', got 'llama'"),
        ({"activation_function": "relu"}, "activation_function must be one of .*got 'relu'"),
        ({"n_inner": 100}, "n_inner must be null or 4 \\* n_embd = 256, got 100"),
        ({"scale_attn_by_inverse_layer_idx": True}, "must be False, got True"),
    ],
    ids=["model-type", "activation", "n-inner", "layer-scaling"],
)
def test_config_rejects_unsupported_models(checkpoints, tmp_path, change, message):
    raw = json.loads((checkpoints["float32"] / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**raw, **change}))
    with pytest.raises(UnsupportedModelError, match=message):
        GPT2Config.from_json(tmp_path / "config.json")


def rewrite_checkpoint(source: Path, target: Path, edit) -> Path:
    shutil.copy(source / "config.json", target / "config.json")
    tensors = load_file(source / "model.safetensors")
    save_file(edit(copy.copy(tensors)), target / "model.safetensors")
    return target


def test_keys_without_transformer_prefix(checkpoints, tmp_path):
    def strip(t):
        return {k.removeprefix("transformer."): v for k, v in t.items()}

    folder = rewrite_checkpoint(checkpoints["float32"], tmp_path, strip)
    engine = GPT2Engine.from_pretrained(folder)
    logits = engine.prefill(engine.allocate(), PROMPT)
    reference = GPT2Engine.from_pretrained(checkpoints["float32"])
    np.testing.assert_array_equal(logits, reference.prefill(reference.allocate(), PROMPT))


def test_missing_tensor_is_named(checkpoints, tmp_path):
    def drop(t):
        del t["transformer.h.1.ln_2.bias"]
        return t

    folder = rewrite_checkpoint(checkpoints["float32"], tmp_path, drop)
    config = GPT2Config.from_json(folder)
    with pytest.raises(CheckpointError, match=r"missing 1 tensor\(s\) .*: h\.1\.ln_2\.bias"):
        load_weights(folder, config)


def test_wrong_shape_is_named(checkpoints, tmp_path):
    def shrink(t):
        t["transformer.wpe.weight"] = t["transformer.wpe.weight"][:32].copy()
        return t

    folder = rewrite_checkpoint(checkpoints["float32"], tmp_path, shrink)
    with pytest.raises(CheckpointError, match=r"wpe\.weight is \(32, 64\), expected \(64, 64\)"):
        load_weights(folder, GPT2Config.from_json(folder))


def test_missing_file(tmp_path, checkpoints):
    with pytest.raises(CheckpointError, match="model.safetensors; it does not exist"):
        load_weights(tmp_path, GPT2Config.from_json(checkpoints["float32"]))
