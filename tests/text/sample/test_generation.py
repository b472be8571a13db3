"""One request's decoding state: deltas, stop sequences, eos and logprobs, without a model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer

from mlserver_streaming.events import FinishReason
from mlserver_streaming.text.sample.generation import Delta, Generation
from mlserver_streaming.text.sample.params import GenerationParams

TOKENIZER = Path(__file__).parents[3] / "model-repo" / "shakespeare" / "tokenizer.json"


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return Tokenizer.from_file(str(TOKENIZER))


def one_hot(token: int, vocab: int) -> np.ndarray:
    logits = np.zeros(vocab, dtype=np.float32)
    logits[token] = 10.0
    return logits


def advance(generation: Generation, logits: np.ndarray, auto_interval: int = 1) -> Delta | None:
    """Sample one token with the request's own chooser and accept it (what a step does)."""
    choice = generation.chooser(logits, generation.history)
    return generation.accept(choice, auto_interval)


def feed(generation: Generation, tokens: list[int], vocab: int):
    deltas = []
    for token in tokens:
        delta = advance(generation, one_hot(token, vocab))
        if delta is not None:
            deltas.append(delta)
            if delta.finish_reason is not None:
                break
    return deltas


def greedy(max_tokens=50, **kw) -> GenerationParams:
    return GenerationParams(max_tokens=max_tokens, temperature=0, **kw)


def test_deltas_rebuild_the_decoded_text_and_length_finishes(tokenizer):
    ids = tokenizer.encode("To be, or not to be: that is the question.").ids
    generation = Generation([1], greedy(max_tokens=len(ids)), tokenizer, eog_token_ids={0})
    deltas = feed(generation, ids, tokenizer.get_vocab_size())
    assert "".join(d.text for d in deltas) == tokenizer.decode(ids)
    assert [t for d in deltas for t in d.token_ids] == ids
    assert deltas[-1].finish_reason is FinishReason.LENGTH
    assert generation.completion_tokens == len(ids)


def test_eos_finishes_without_emitting_its_text(tokenizer):
    ids = tokenizer.encode("Good night").ids
    generation = Generation([1], greedy(), tokenizer, eog_token_ids={0})
    deltas = feed(generation, [*ids, 0, 5, 6], tokenizer.get_vocab_size())
    assert "".join(d.text for d in deltas) == "Good night"
    assert deltas[-1].finish_reason is FinishReason.EOS
    assert deltas[-1].token_ids[-1] == 0
    assert generation.completion_tokens == len(ids) + 1


def test_stop_sequence_spanning_tokens_is_matched_and_not_emitted(tokenizer):
    text = "Speak, HAMLET: I will."
    ids = tokenizer.encode(text).ids
    generation = Generation([1], greedy(stop=("HAMLET:",)), tokenizer, eog_token_ids={0})
    deltas = feed(generation, ids, tokenizer.get_vocab_size())
    assert "".join(d.text for d in deltas) == "Speak, "
    assert deltas[-1].finish_reason is FinishReason.STOP


def test_multibyte_text_is_never_split(tokenizer):
    text = "Ça, 東京 and 🎭 too"
    ids = tokenizer.encode(text).ids
    assert len(ids) > len(text.split())  # the CJK and emoji take several byte tokens
    generation = Generation([1], greedy(max_tokens=len(ids)), tokenizer, eog_token_ids={0})
    deltas = feed(generation, ids, tokenizer.get_vocab_size())
    assert all("\ufffd" not in d.text for d in deltas)
    assert "".join(d.text for d in deltas) == text


def test_logprobs_are_collected_per_token(tokenizer):
    ids = tokenizer.encode("Hark").ids
    generation = Generation([1], greedy(max_tokens=len(ids), logprobs=2), tokenizer, {0})
    deltas = feed(generation, ids, tokenizer.get_vocab_size())
    logprobs = [lp for d in deltas for lp in d.logprobs]
    tops = [t for d in deltas for t in d.top_logprobs]
    assert len(logprobs) == len(tops) == len(ids)
    assert all(lp < 0 for lp in logprobs) and all(len(t) == 2 for t in tops)
    assert [t[0][0] for t in tops] == ids  # the one-hot winner is the most likely


def test_finish_flushes_held_back_text(tokenizer):
    ids = tokenizer.encode("Alas, poor Yor").ids
    generation = Generation([1], greedy(stop=("Yorick!",)), tokenizer, eog_token_ids={0})
    deltas = feed(generation, ids, tokenizer.get_vocab_size())
    assert "".join(d.text for d in deltas) == "Alas, poor "  # "Yor" may start the stop
    last = generation.finish(FinishReason.CANCELLED)
    assert last.text == "Yor" and last.finish_reason is FinishReason.CANCELLED


@pytest.mark.parametrize("interval", [1, 3, 8])
def test_stream_interval_sends_the_first_text_at_once_then_every_n_tokens(tokenizer, interval):
    ids = tokenizer.encode("Now is the winter of our discontent made glorious summer").ids
    generation = Generation([1], greedy(len(ids), stream_interval=interval), tokenizer, {0})
    deltas = feed(generation, ids, tokenizer.get_vocab_size())
    sizes = [len(d.token_ids) for d in deltas]
    assert sizes[0] == 1  # this text has no held-back characters
    assert all(size >= interval for size in sizes[1:-1])
    assert sum(sizes) == len(ids) and deltas[-1].finish_reason is FinishReason.LENGTH
    assert "".join(d.text for d in deltas) == tokenizer.decode(ids)
    if interval == 1:
        assert sizes == [1] * len(ids)
    else:
        assert len(deltas) <= 2 + len(ids) // interval


@pytest.mark.parametrize(("explicit", "auto", "size"), [(0, 1, 1), (0, 4, 4), (2, 4, 2)])
def test_auto_stream_interval_follows_the_scheduler_unless_the_request_sets_one(
    tokenizer, explicit, auto, size
):
    ids = tokenizer.encode("Now is the winter of our discontent made glorious summer").ids
    generation = Generation([1], greedy(len(ids), stream_interval=explicit), tokenizer, {0})
    deltas = []
    for token in ids:
        delta = advance(generation, one_hot(token, tokenizer.get_vocab_size()), auto)
        if delta is not None:
            deltas.append(delta)
    sizes = [len(d.token_ids) for d in deltas]
    assert sizes[0] == 1 and all(n >= size for n in sizes[1:-1])
    assert size == 1 or any(n == size for n in sizes[1:-1])
    assert [t for d in deltas for t in d.token_ids] == ids


@pytest.mark.parametrize("cut", [1, 3, 6])
def test_a_replayed_generation_continues_exactly_as_the_undisturbed_one(tokenizer, cut):
    # A worker died after sending `cut` deltas: another replays their tokens, then samples
    # from the same logits; it must send what the first would have, seed and penalty included.
    vocab = tokenizer.get_vocab_size()
    logits = np.random.default_rng(0).normal(size=(40, vocab)).astype(np.float32) * 4
    params = GenerationParams(
        max_tokens=40, temperature=0.9, top_k=50, seed=11, repetition_penalty=1.3, stop=("ing",)
    )
    whole = Generation([1, 2], params, tokenizer)
    deltas = [d for row in logits if (d := advance(whole, row)) is not None]
    sent = [t for d in deltas[:cut] for t in d.token_ids]
    resumed = Generation([1, 2], params, tokenizer)
    resumed.replay(sent)
    assert resumed.prefill_ids == [1, 2, *sent]
    rest = [d for row in logits[len(sent) :] if (d := advance(resumed, row)) is not None]
    assert rest == deltas[cut:] and resumed.completion_tokens == whole.completion_tokens
