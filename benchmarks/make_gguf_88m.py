#!/usr/bin/env python
"""Write a GPT-2-shaped ~88M-parameter random-weight checkpoint for benchmarks: a Hugging Face
GPT-2 folder (for the numpy engine) and the same weights as GGUF, f32 and Q8_0 (for llama.cpp).

GPT-2 small's body (12 layers, 768 wide, 12 heads, 1024 positions) with the shakespeare
model's 4096-token vocabulary (its ``tokenizer.json`` is copied), so any prompt tokenizes as
it does on the shipped model: 85M in the blocks + 3.9M in the embeddings. Weights at GPT-2's
initialisation scale (std 0.02), layer norms at identity, tied embeddings.

The folder ``hf/`` (config.json, model.safetensors, tokenizer.json, model-settings.json) is
converted to GGUF f32 by ``training/convert_gguf.py`` (llama.cpp's own converter, with its
GPT-2 pre-tokenizer and BOS fixes), so both engines load the same numbers; Q8_0 is made from
the f32 GGUF by llama.cpp's ``llama_model_quantize``.

    .venv/bin/python benchmarks/make_gguf_88m.py --out benchmarks/.cache/gguf-88m
    # -> hf/, gpt2-88m-f32.gguf, gpt2-88m-q8_0.gguf
"""

from __future__ import annotations

import argparse
import ctypes
import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHAKESPEARE = ROOT / "model-repo" / "shakespeare"
N_LAYER, N_EMBD, N_HEAD, N_CTX = 12, 768, 12, 1024
NAME = "gpt2-88m"


def write_hf_folder(folder: Path, seed: int = 0) -> Path:
    """A GPT2LMHeadModel folder with random f32 weights and shakespeare's tokenizer."""
    from safetensors.numpy import save_file

    folder.mkdir(parents=True, exist_ok=True)
    base = json.loads((SHAKESPEARE / "config.json").read_text())
    n_vocab = int(base["vocab_size"])
    config = {
        **base,
        "n_layer": N_LAYER,
        "n_embd": N_EMBD,
        "n_head": N_HEAD,
        "n_positions": N_CTX,
        "dtype": "float32",
    }
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    shutil.copy2(SHAKESPEARE / "tokenizer.json", folder / "tokenizer.json")
    # convert_gguf.py reads prepend_bos from here (the model expects BOS, as shakespeare).
    settings = {"name": NAME, "parameters": {"extra": {"prepend_bos": True}}}
    (folder / "model-settings.json").write_text(json.dumps(settings, indent=2))

    rng = np.random.default_rng(seed)

    def w(*shape: int) -> np.ndarray:  # Hugging Face Conv1D layout: [in, out]
        return (rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(np.float32)

    c = N_EMBD
    ones, zeros = np.ones(c, dtype=np.float32), np.zeros(c, dtype=np.float32)
    tensors = {
        "transformer.wte.weight": w(n_vocab, c),
        "transformer.wpe.weight": w(N_CTX, c),
        "transformer.ln_f.weight": ones,
        "transformer.ln_f.bias": zeros,
    }
    for i in range(N_LAYER):
        h = f"transformer.h.{i}"
        tensors |= {
            f"{h}.ln_1.weight": ones,
            f"{h}.ln_1.bias": zeros,
            f"{h}.attn.c_attn.weight": w(c, 3 * c),
            f"{h}.attn.c_attn.bias": np.zeros(3 * c, dtype=np.float32),
            f"{h}.attn.c_proj.weight": w(c, c),
            f"{h}.attn.c_proj.bias": zeros,
            f"{h}.ln_2.weight": ones,
            f"{h}.ln_2.bias": zeros,
            f"{h}.mlp.c_fc.weight": w(c, 4 * c),
            f"{h}.mlp.c_fc.bias": np.zeros(4 * c, dtype=np.float32),
            f"{h}.mlp.c_proj.weight": w(4 * c, c),
            f"{h}.mlp.c_proj.bias": zeros,
        }
    save_file(
        {k: np.ascontiguousarray(v) for k, v in tensors.items()}, folder / "model.safetensors"
    )
    return folder


def convert_f32(folder: Path, out: Path) -> Path:
    """``out/gpt2-88m-f32.gguf`` by training/convert_gguf.py's conversion (same weights)."""
    spec = importlib.util.spec_from_file_location(
        "convert_gguf", ROOT / "training" / "convert_gguf.py"
    )
    assert spec is not None and spec.loader is not None
    convert_gguf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(convert_gguf)
    written = Path(convert_gguf.convert(folder, out, "f32", NAME))
    target = out / f"{NAME}-f32.gguf"
    if written != target:  # the converter writes a version subfolder (out/f32/)
        written.replace(target)
        if written.parent != out and not any(written.parent.iterdir()):
            written.parent.rmdir()
    return target


def quantize_q8_0(source: Path, target: Path) -> Path:
    """llama.cpp's quantizer, through llama-cpp-python's low-level API (no CLI build)."""
    from mlserver_streaming.engine.llama_lib import llama_lib

    lib = llama_lib()
    params = lib.llama_model_quantize_default_params()
    params.ftype = lib.LLAMA_FTYPE_MOSTLY_Q8_0
    params.nthread = 2
    status = lib.llama_model_quantize(
        str(source).encode(), str(target).encode(), ctypes.byref(params)
    )
    if status != 0:
        raise RuntimeError(f"llama_model_quantize({source} -> {target}) returned {status}")
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / ".cache" / "gguf-88m")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    folder = write_hf_folder(args.out / "hf", args.seed)
    f32 = convert_f32(folder, args.out)
    q8 = quantize_q8_0(f32, args.out / f"{NAME}-q8_0.gguf")
    for path in (folder / "model.safetensors", f32, q8):
        print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
