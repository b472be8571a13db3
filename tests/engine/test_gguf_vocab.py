"""A GGUF file's vocabulary: special ids and every end-of-generation id."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("llama_cpp", reason="GGUF models need the llama extra")

from mlserver_streaming.engine.gguf_vocab import GGUFVocab  # noqa: E402
from mlserver_streaming.text.model_folder import open_model_folder  # noqa: E402
from mlserver_streaming.text.sample.generation import Generation  # noqa: E402
from mlserver_streaming.text.sample.params import GenerationParams  # noqa: E402
from mlserver_streaming.text.sample.sampling import Choice  # noqa: E402
from mlserver_streaming.text.settings import TextGenerationSettings  # noqa: E402
from tests.gguf_fixtures import EOS, EOT, write_tiny_llama  # noqa: E402


def test_an_end_of_turn_token_apart_from_eos_ends_a_generation(tmp_path: Path) -> None:
    path = write_tiny_llama(tmp_path / "chat.gguf", eot=True)
    vocab = GGUFVocab.load(path)
    n = vocab.tokenizer.vocab_size  # the fixture's specials come last: <s>, </s>, <|im_end|>
    eos, eot = n - 2, n - 1
    assert vocab.tokenizer.decode([eos, eot], skip_special_tokens=False) == EOS + EOT
    assert vocab.eos_token_id == eos and vocab.eog_token_ids == {eos, eot}
    folder = open_model_folder(path, TextGenerationSettings(), "chat")
    assert folder.eog_token_ids == {eos, eot}
    # The turn ends on <|im_end|>: EOS as the reason, and the token's text never sent.
    params = GenerationParams(max_tokens=8, temperature=0.0, seed=0)
    generation = Generation([vocab.bos_token_id], params, vocab.tokenizer, folder.eog_token_ids)
    hello = vocab.tokenizer.encode("hi")
    deltas = [generation.accept(Choice(token, 0.0, ())) for token in [*hello, eot]]
    last = [d for d in deltas if d is not None][-1]
    assert last.finish_reason == "eos" and EOT not in last.text
    vocab.close()
    folder.close()
