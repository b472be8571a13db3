#!/usr/bin/env python
"""Convert the shakespeare GPT-2 (safetensors fp16 + tokenizer.json) to GGUF, f16 and Q8_0.

Uses llama.cpp's own ``convert_hf_to_gguf.py`` from the ``llama-cpp-python`` source
distribution (downloaded once into ``training/.cache/``), so the tensor layout and vocabulary
metadata are exactly what llama.cpp expects. Two fixes on top of the stock converter:

- its pre-tokenizer detection hashes the encoding of a test string and knows only published
  checkpoints; ours is a freshly trained byte-level BPE with GPT-2's pre-tokenizer, so
  ``tokenizer.ggml.pre`` is pinned to ``"gpt-2"``;
- it takes ``add_bos_token`` from tokenizer.json's post-processor (ByteLevel: none, so
  ``false``); the model was trained with ``<|endoftext|>`` before every document and is
  served with ``prepend_bos: true`` (model-settings.json), so ``add_bos_token`` is forced to
  that setting. The converter runs on a temporary copy of the folder with a
  ``tokenizer_config.json`` naming the special tokens and GPT-2's legacy ``n_ctx`` added to
  config.json (transformers 5 no longer writes it; the converter still reads it).

Q8_0 uses the converter's ``--outtype q8_0`` (gguf-py quantizes the 2-D weights; norms and
biases stay f32), which needs no compiled llama.cpp.

    .venv/bin/python training/convert_gguf.py \\
        --model model-repo/shakespeare --out model-repo/shakespeare-gguf
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

LLAMA_CPP_PYTHON = "llama-cpp-python==0.3.36"
SDIST = "llama_cpp_python-0.3.36"
CACHE = Path(__file__).resolve().parent / ".cache"
OUTTYPES = ("f16", "q8_0")
EOT = "<|endoftext|>"

# Runs inside a fresh interpreter: the converter puts its vendored gguf-py on sys.path and
# configures logging at import, which should not leak into this script.
_RUN_CONVERTER = """
import sys
sys.path.insert(0, sys.argv[1])
add_bos = sys.argv[2] == "true"
from conversion import base
base.TextModel.get_vocab_base_pre = lambda self, tokenizer: "gpt-2"
write_special = base.gguf.SpecialVocab.add_to_gguf
def add_to_gguf(self, gw, quiet=False):
    self.add_special_token["bos"] = add_bos
    return write_special(self, gw, quiet)
base.gguf.SpecialVocab.add_to_gguf = add_to_gguf
import convert_hf_to_gguf
sys.argv = ["convert_hf_to_gguf.py", *sys.argv[3:]]
convert_hf_to_gguf.main()
"""


def converter_dir() -> Path:
    """llama.cpp's source tree from the sdist, downloaded and unpacked once into the cache."""
    root = CACHE / SDIST / "vendor" / "llama.cpp"
    if (root / "convert_hf_to_gguf.py").is_file():
        return root
    CACHE.mkdir(parents=True, exist_ok=True)
    archive = CACHE / f"{SDIST}.tar.gz"
    if not archive.is_file():
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:"]
            + [LLAMA_CPP_PYTHON, "-d", str(CACHE)],
            check=True,
        )
    with tarfile.open(archive) as tar:
        tar.extractall(CACHE, filter="data")
    return root


def prepend_bos(model: Path) -> bool:
    """Whether the served model expects BOS first (model-settings.json; the default is yes)."""
    settings = model / "model-settings.json"
    if not settings.is_file():
        return True
    extra = json.loads(settings.read_text()).get("parameters", {}).get("extra", {})
    return bool(extra.get("prepend_bos", True))


def staged_model(model: Path, into: Path) -> Path:
    """A copy of the model folder with the tokenizer_config.json the converter reads."""
    for name in ("model.safetensors", "tokenizer.json"):
        shutil.copy2(model / name, into / name)
    hparams = json.loads((model / "config.json").read_text())
    # transformers 5 no longer writes GPT-2's legacy `n_ctx`; the converter still reads it.
    hparams.setdefault("n_ctx", hparams["n_positions"])
    (into / "config.json").write_text(json.dumps(hparams, indent=2))
    config = {
        "tokenizer_class": "GPT2Tokenizer",
        "bos_token": EOT,
        "eos_token": EOT,
        "unk_token": EOT,
        "add_bos_token": prepend_bos(model),
        "add_eos_token": False,
        "model_max_length": hparams["n_positions"],
    }
    # The folder's chat template (the play-script one) goes into the GGUF's metadata too.
    own = model / "tokenizer_config.json"
    if own.is_file() and "chat_template" in (template := json.loads(own.read_text())):
        config["chat_template"] = template["chat_template"]
    (into / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    return into


def convert(model: Path, out: Path, outtype: str, name: str) -> Path:
    """Write ``out/{outtype}/{name}-{outtype}.gguf`` (one served version per type) with
    llama.cpp's converter; returns its path."""
    (out / outtype).mkdir(parents=True, exist_ok=True)
    target = out / outtype / f"{name}-{outtype}.gguf"
    with tempfile.TemporaryDirectory() as tmp:
        staged = staged_model(model, Path(tmp))
        add_bos = "true" if prepend_bos(model) else "false"
        cmd = [sys.executable, "-c", _RUN_CONVERTER, str(converter_dir()), add_bos, str(staged)]
        cmd += ["--outtype", outtype, "--outfile", str(target), "--model-name", name]
        subprocess.run(cmd, check=True)
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=Path("model-repo/shakespeare"))
    parser.add_argument("--out", type=Path, default=Path("model-repo/shakespeare-gguf"))
    parser.add_argument("--name", default="shakespeare")
    parser.add_argument("--outtype", choices=OUTTYPES, action="append")
    args = parser.parse_args()
    for outtype in args.outtype or OUTTYPES:
        path = convert(args.model, args.out, outtype, args.name)
        print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
