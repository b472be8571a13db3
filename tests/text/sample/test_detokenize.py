"""IncrementalDetokenizer on multi-byte text with a tiny byte-level BPE trained here."""

from __future__ import annotations

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from mlserver_streaming.text.sample.detokenize import REPLACEMENT_CHAR, IncrementalDetokenizer

EOT = "<|endoftext|>"
CORPUS = [
    "To be, or not to be, that is the question.",
    "Café crème, naïve façade, déjà vu.",
    "東京は日本の首都です。",
    "Emoji: 🎭 and 👑 on the stage.",
]
SAMPLES = [
    pytest.param("the question", id="ascii"),
    pytest.param(" naïve café déjà", id="accents"),
    pytest.param("東京の首都、京都", id="cjk"),
    pytest.param("🎭👑 stage 🎉", id="emoji"),
    pytest.param("e\u0301 combining + 🇯🇵 flag", id="combining-and-flag"),
]


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer=trainer)
    return tok


def stream(detok: IncrementalDetokenizer, ids: list[int]) -> list[str]:
    return [detok.step(token_id) for token_id in ids] + [detok.flush()]


def test_a_character_split_over_tokens_is_held_back_until_its_last_byte(
    tokenizer: Tokenizer,
) -> None:
    for char in ("👑", "🎉", "首", "京"):
        ids = tokenizer.encode(char).ids
        assert len(ids) > 1, f"the fixture's tokenizer must split {char!r} over tokens"
        detok = IncrementalDetokenizer(tokenizer)
        deltas = [detok.step(token_id) for token_id in ids]
        assert deltas == [""] * (len(ids) - 1) + [char]
        assert detok.flush() == ""


@pytest.mark.parametrize("text", SAMPLES)
def test_deltas_join_to_the_decoded_text(tokenizer: Tokenizer, text: str) -> None:
    ids = tokenizer.encode(text).ids
    deltas = stream(IncrementalDetokenizer(tokenizer), ids)
    assert "".join(deltas) == tokenizer.decode(ids) == text
    assert not any(REPLACEMENT_CHAR in delta for delta in deltas)


@pytest.mark.parametrize("text", SAMPLES)
def test_prompt_context_does_not_leak_into_deltas(tokenizer: Tokenizer, text: str) -> None:
    prompt = tokenizer.encode("Emoji: 🎭 and").ids
    ids = tokenizer.encode(text).ids
    deltas = stream(IncrementalDetokenizer(tokenizer, prompt), ids)
    assert "".join(deltas) == text
    assert not any(REPLACEMENT_CHAR in delta for delta in deltas)


def test_held_back_until_the_character_is_complete(tokenizer: Tokenizer) -> None:
    ids = tokenizer.encode("👑").ids
    deltas = stream(IncrementalDetokenizer(tokenizer), ids)
    assert deltas[:-2] == [""] * (len(ids) - 1)
    assert deltas[-2:] == ["👑", ""]


def test_special_tokens_are_skipped(tokenizer: Tokenizer) -> None:
    eot = tokenizer.token_to_id(EOT)
    ids = tokenizer.encode("to be").ids + [eot] + tokenizer.encode(" 🎭").ids
    deltas = stream(IncrementalDetokenizer(tokenizer), ids)
    assert "".join(deltas) == "to be 🎭"
    assert deltas[len(tokenizer.encode("to be").ids)] == ""


def test_incomplete_bytes_are_flushed_at_the_end(tokenizer: Tokenizer) -> None:
    ids = tokenizer.encode("ok 👑").ids[:-1]  # generation stopped inside the emoji
    detok = IncrementalDetokenizer(tokenizer)
    streamed = "".join(detok.step(i) for i in ids)
    assert streamed.startswith("ok") and REPLACEMENT_CHAR not in streamed
    assert tokenizer.decode(ids).endswith(REPLACEMENT_CHAR)
    assert streamed + detok.flush() == tokenizer.decode(ids)
