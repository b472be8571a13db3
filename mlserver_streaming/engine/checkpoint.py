"""Load a Hugging Face GPT-2 ``model.safetensors`` into float32 numpy arrays, torch-free."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors import deserialize

from .config import GPT2Config

WEIGHTS_FILE = "model.safetensors"
# GPT2LMHeadModel nests the body under "transformer."; a bare GPT2Model does not.
PREFIX = "transformer."
LM_HEAD = "lm_head.weight"

_DTYPES: dict[str, type[np.generic]] = {"F16": np.float16, "F32": np.float32, "F64": np.float64}


class CheckpointError(ValueError):
    """The checkpoint is missing, unreadable, or does not match its config."""


@dataclass(frozen=True)
class BlockWeights:
    """One transformer block, in Hugging Face Conv1D layout ([in, out], used as x @ W + b)."""

    ln_1_weight: np.ndarray  # [C]
    ln_1_bias: np.ndarray  # [C]
    attn_weight: np.ndarray  # [C, 3C]: fused q, k, v
    attn_bias: np.ndarray  # [3C]
    attn_proj_weight: np.ndarray  # [C, C]
    attn_proj_bias: np.ndarray  # [C]
    ln_2_weight: np.ndarray  # [C]
    ln_2_bias: np.ndarray  # [C]
    fc_weight: np.ndarray  # [C, 4C]
    fc_bias: np.ndarray  # [4C]
    mlp_proj_weight: np.ndarray  # [4C, C]
    mlp_proj_bias: np.ndarray  # [C]


@dataclass(frozen=True)
class GPT2Weights:
    """All parameters of a GPT2LMHeadModel as float32 arrays; ``lm_head`` is ``wte`` when tied."""

    wte: np.ndarray  # [V, C] token embeddings
    wpe: np.ndarray  # [P, C] position embeddings
    blocks: list[BlockWeights]
    ln_f_weight: np.ndarray  # [C]
    ln_f_bias: np.ndarray  # [C]
    lm_head: np.ndarray  # [V, C]


# BlockWeights field -> (Hugging Face name inside block i, shape as multiples of C).
_BLOCK_TENSORS: dict[str, tuple[str, tuple[int, ...]]] = {
    "ln_1_weight": ("ln_1.weight", (1,)),
    "ln_1_bias": ("ln_1.bias", (1,)),
    "attn_weight": ("attn.c_attn.weight", (1, 3)),
    "attn_bias": ("attn.c_attn.bias", (3,)),
    "attn_proj_weight": ("attn.c_proj.weight", (1, 1)),
    "attn_proj_bias": ("attn.c_proj.bias", (1,)),
    "ln_2_weight": ("ln_2.weight", (1,)),
    "ln_2_bias": ("ln_2.bias", (1,)),
    "fc_weight": ("mlp.c_fc.weight", (1, 4)),
    "fc_bias": ("mlp.c_fc.bias", (4,)),
    "mlp_proj_weight": ("mlp.c_proj.weight", (4, 1)),
    "mlp_proj_bias": ("mlp.c_proj.bias", (1,)),
}


def expected_shapes(config: GPT2Config) -> dict[str, tuple[int, ...]]:
    """Every tensor the engine needs (names without the ``transformer.`` prefix) and its shape."""
    c = config.n_embd
    shapes: dict[str, tuple[int, ...]] = {
        "wte.weight": (config.vocab_size, c),
        "wpe.weight": (config.n_positions, c),
        "ln_f.weight": (c,),
        "ln_f.bias": (c,),
    }
    for i in range(config.n_layer):
        for name, mult in _BLOCK_TENSORS.values():
            shapes[f"h.{i}.{name}"] = tuple(m * c for m in mult)
    return shapes


def load_weights(folder: Path, config: GPT2Config) -> GPT2Weights:
    """Read ``folder/model.safetensors`` (fp32, fp16 or bf16 on disk) as float32 and check every
    tensor against ``config``, so a mismatched checkpoint fails at load, not mid-request."""
    tensors = _read_safetensors(Path(folder) / WEIGHTS_FILE)
    _check(tensors, config, Path(folder) / WEIGHTS_FILE)
    blocks = [
        BlockWeights(**{f: tensors[f"h.{i}.{n}"] for f, (n, _) in _BLOCK_TENSORS.items()})
        for i in range(config.n_layer)
    ]
    return GPT2Weights(
        wte=tensors["wte.weight"],
        wpe=tensors["wpe.weight"],
        blocks=blocks,
        ln_f_weight=tensors["ln_f.weight"],
        ln_f_bias=tensors["ln_f.bias"],
        lm_head=tensors.get(LM_HEAD, tensors["wte.weight"]),
    )


def _read_safetensors(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise CheckpointError(
            f"expected a single-file checkpoint at {path}; it does not exist "
            "(sharded checkpoints are not supported)."
        )
    tensors = {}
    for name, view in deserialize(path.read_bytes()):
        array = _to_float32(name, view["dtype"], view["data"])
        tensors[name.removeprefix(PREFIX)] = array.reshape(view["shape"])
    return tensors


def _to_float32(name: str, dtype: str, data: bytearray) -> np.ndarray:
    if dtype == "BF16":
        # bfloat16 is the top half of a float32; numpy has no native type for it.
        return (np.frombuffer(data, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
    if dtype not in _DTYPES:
        allowed = sorted([*_DTYPES, "BF16"])
        raise CheckpointError(f"tensor {name} has dtype {dtype}; supported: {allowed}.")
    return np.frombuffer(data, dtype=np.dtype(_DTYPES[dtype]).newbyteorder("<")).astype(np.float32)


def _check(tensors: dict[str, np.ndarray], config: GPT2Config, path: Path) -> None:
    shapes = expected_shapes(config)
    if LM_HEAD in tensors:
        shapes[LM_HEAD] = (config.vocab_size, config.n_embd)
    missing = [name for name in shapes if name not in tensors]
    if missing:
        shown = ", ".join(missing[:8]) + (" ..." if len(missing) > 8 else "")
        raise CheckpointError(
            f"{path} is missing {len(missing)} tensor(s) the config requires: {shown} "
            f"(names may carry the {PREFIX!r} prefix)."
        )
    wrong = [
        f"{name} is {tensors[name].shape}, expected {shape}"
        for name, shape in shapes.items()
        if tensors[name].shape != shape
    ]
    if wrong:
        raise CheckpointError(f"{path} does not match its config: " + "; ".join(wrong) + ".")
