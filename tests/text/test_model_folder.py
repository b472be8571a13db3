"""The model folder chooses the engine: GGUF files run on llama.cpp, safetensors on numpy."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from mlserver_streaming.errors import InvalidSettings
from mlserver_streaming.text.model_folder import GGUFFolder, GPT2Folder, open_model_folder
from mlserver_streaming.text.settings import TextGenerationSettings

pytest.importorskip("llama_cpp", reason="GGUF models need the llama extra")

REPO = Path(__file__).parents[2] / "model-repo"
F16 = REPO / "shakespeare-gguf" / "f16" / "shakespeare-f16.gguf"
Q8_0 = REPO / "shakespeare-gguf" / "q8_0" / "shakespeare-q8_0.gguf"
SETTINGS = TextGenerationSettings()


def test_a_safetensors_folder_keeps_the_numpy_engine() -> None:
    folder = open_model_folder(REPO / "shakespeare", SETTINGS, "poet")
    assert isinstance(folder, GPT2Folder)
    assert (folder.context_window, folder.adds_bos, folder.embedded_chat_template) == (
        256,
        False,
        None,
    )


def test_a_gguf_uri_or_the_one_gguf_of_a_folder_runs_on_llama_cpp(tmp_path: Path) -> None:
    by_file = open_model_folder(F16, SETTINGS, "poet")
    by_folder = open_model_folder(F16.parent, SETTINGS, "poet")
    for folder in (by_file, by_folder):
        assert isinstance(folder, GGUFFolder) and folder.path == F16
        assert (folder.context_window, folder.bos_token_id, folder.adds_bos) == (256, 0, True)
        assert folder.tokenizer().encode("ROMEO:\n") == [2045, 26, 199]
    template = by_file.embedded_chat_template
    assert template is not None and template.special_tokens["eos_token"] == "<|endoftext|>"


def test_a_folder_with_several_gguf_files_needs_one_named(tmp_path: Path) -> None:
    for path in (F16, Q8_0):
        shutil.copy(path, tmp_path / path.name)
    with pytest.raises(InvalidSettings) as info:
        open_model_folder(tmp_path, SETTINGS, "poet")
    assert str(info.value) == (
        f"model 'poet': {tmp_path} holds several GGUF files (shakespeare-f16.gguf, "
        "shakespeare-q8_0.gguf); name one with parameters.uri or parameters.extra.gguf_file."
    )
    named = TextGenerationSettings(gguf_file="shakespeare-q8_0.gguf")
    assert open_model_folder(tmp_path, named, "poet").path == tmp_path / Q8_0.name


def test_a_folder_with_neither_says_what_it_needs(tmp_path: Path) -> None:
    with pytest.raises(InvalidSettings, match="must hold a .gguf file or config.json"):
        open_model_folder(tmp_path, SETTINGS, "poet")
    (tmp_path / "model.gguf").write_bytes(b"PK\x03\x04 not a gguf")
    with pytest.raises(InvalidSettings, match=r"model\.gguf is not a GGUF file"):
        open_model_folder(tmp_path, SETTINGS, "poet")


def test_the_engine_gets_the_folders_llama_settings() -> None:
    settings = TextGenerationSettings(max_running=3, threads=1, kv_unified=True)
    engine = open_model_folder(F16, settings, "poet").engine(settings)
    try:
        assert (engine.max_slots, engine.threads, engine.unified_kv) == (3, 1, True)
    finally:
        engine.close()  # type: ignore[attr-defined]
