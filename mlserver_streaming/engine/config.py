"""The shape of a GPT-2-family model, read once from a Hugging Face ``config.json``."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Activations that are exactly the tanh approximation the engine implements.
SUPPORTED_ACTIVATIONS = ("gelu_new", "gelu_pytorch_tanh")
CONFIG_FILE = "config.json"


class UnsupportedModelError(ValueError):
    """The config describes a model the numpy engine cannot run faithfully."""


@dataclass(frozen=True)
class GPT2Config:
    """Hyper-parameters of a GPT-2 causal LM; everything the forward pass needs to know."""

    vocab_size: int  # number of token ids (rows of wte and of the logits)
    n_positions: int  # longest sequence the learned position table covers
    n_embd: int  # width of the residual stream
    n_layer: int  # number of transformer blocks
    n_head: int  # attention heads per block; n_embd must divide evenly
    layer_norm_epsilon: float = 1e-5  # added to the variance in every LayerNorm
    bos_token_id: int | None = None  # begin-of-sequence id, if the tokenizer has one
    eos_token_id: int | None = None  # end-of-sequence id (the first of a list)
    eos_token_ids: tuple[int, ...] = ()  # every end-of-sequence id: generation stops on each

    def __post_init__(self) -> None:
        if self.n_embd % self.n_head:
            raise UnsupportedModelError(
                f"n_embd must be divisible by n_head, got n_embd={self.n_embd}, "
                f"n_head={self.n_head}."
            )

    @property
    def head_dim(self) -> int:
        """Width of one attention head (n_embd // n_head)."""
        return self.n_embd // self.n_head

    @classmethod
    def from_json(cls, path: str | Path) -> GPT2Config:
        """Read a Hugging Face GPT-2 ``config.json`` (file or its folder), rejecting variants
        whose maths differ from what the engine computes."""
        path = Path(path)
        if path.is_dir():
            path = path / CONFIG_FILE
        raw: dict[str, Any] = json.loads(path.read_text())
        _check_supported(raw, path)
        return cls(
            vocab_size=int(raw["vocab_size"]),
            n_positions=int(raw["n_positions"]),
            n_embd=int(raw["n_embd"]),
            n_layer=int(raw["n_layer"]),
            n_head=int(raw["n_head"]),
            layer_norm_epsilon=float(raw.get("layer_norm_epsilon", 1e-5)),
            bos_token_id=_token_id(raw.get("bos_token_id")),
            eos_token_id=_token_id(raw.get("eos_token_id")),
            eos_token_ids=_token_ids(raw.get("eos_token_id")),
        )


def _token_ids(value: Any) -> tuple[int, ...]:
    # Instruct models list several (end of text, end of turn): each ends a generation.
    values = value if isinstance(value, list) else [] if value is None else [value]
    return tuple(int(v) for v in values)


def _token_id(value: Any) -> int | None:
    # Newer configs may list several eos ids; the first one is the canonical one.
    if isinstance(value, list):
        value = value[0] if value else None
    return None if value is None else int(value)


def _check_supported(raw: dict[str, Any], path: Path) -> None:
    model_type = raw.get("model_type")
    if model_type != "gpt2":
        raise UnsupportedModelError(f"{path}: model_type must be 'gpt2', got {model_type!r}.")
    activation = raw.get("activation_function", "gelu_new")
    if activation not in SUPPORTED_ACTIVATIONS:
        raise UnsupportedModelError(
            f"{path}: activation_function must be one of {list(SUPPORTED_ACTIVATIONS)}, "
            f"got {activation!r}."
        )
    n_inner = raw.get("n_inner")
    if n_inner is not None and n_inner != 4 * raw["n_embd"]:
        raise UnsupportedModelError(
            f"{path}: n_inner must be null or 4 * n_embd = {4 * raw['n_embd']}, got {n_inner}."
        )
    # Flags that change the attention maths; the defaults are the only variant supported.
    for flag, wanted in (
        ("scale_attn_weights", True),
        ("scale_attn_by_inverse_layer_idx", False),
        ("add_cross_attention", False),
    ):
        if raw.get(flag, wanted) != wanted:
            raise UnsupportedModelError(f"{path}: {flag} must be {wanted}, got {raw[flag]!r}.")
