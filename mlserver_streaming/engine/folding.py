"""GPT-2 block weights pre-folded at load so the hot path does fewer, larger operations."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .checkpoint import BlockWeights

F32 = np.float32


@dataclass(frozen=True)
class FoldedBlock:
    """A block's weights pre-folded so the hot path does fewer, larger operations."""

    attn_w: np.ndarray  # [C, 3C], ln_1 affine folded in, q columns scaled by 1/sqrt(head_dim)
    attn_b: np.ndarray  # [3C]
    proj_w: np.ndarray  # [C, C]
    proj_b: np.ndarray  # [C]
    fc_w: np.ndarray  # [C, 4C], ln_2 affine folded in
    fc_b: np.ndarray  # [4C]
    mlp_w: np.ndarray  # [4C, C]
    mlp_b: np.ndarray  # [C]


def fold_layer_norm(
    gain: np.ndarray, bias: np.ndarray, w: np.ndarray, b: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """A layer norm's gain and bias folded into the matmul that follows it."""
    # (xhat * g + beta) @ W + b == xhat @ (g[:, None] * W) + (beta @ W + b); done in float64.
    w64, b64 = w.astype(np.float64), b.astype(np.float64)
    return gain.astype(np.float64)[:, None] * w64, bias.astype(np.float64) @ w64 + b64


def fold_block(blk: BlockWeights, head_dim: int) -> FoldedBlock:
    """One block's weights with its layer norms' affine parts and the attention scale folded in."""
    attn_w, attn_b = fold_layer_norm(blk.ln_1_weight, blk.ln_1_bias, blk.attn_weight, blk.attn_bias)
    c = attn_w.shape[0]
    attn_w[:, :c] *= head_dim**-0.5
    attn_b[:c] *= head_dim**-0.5
    fc_w, fc_b = fold_layer_norm(blk.ln_2_weight, blk.ln_2_bias, blk.fc_weight, blk.fc_bias)
    arrays = [attn_w, attn_b, blk.attn_proj_weight, blk.attn_proj_bias, fc_w, fc_b]
    arrays += [blk.mlp_proj_weight, blk.mlp_proj_bias]
    return FoldedBlock(*(np.ascontiguousarray(a, dtype=F32) for a in arrays))
