"""GPT-2 forward pass in numpy: chunked prefill and batched decode over a slotted KV cache."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .checkpoint import GPT2Weights, load_weights
from .config import CONFIG_FILE, GPT2Config
from .folding import FoldedBlock, fold_block
from .kv_cache import KVCache
from .seams import check_decode, check_prefill, check_token_ids

F32 = np.float32
# Every hot-path constant is a float32 scalar: a float64 one silently promotes whole arrays.
_GELU_C = F32(np.sqrt(2.0 / np.pi))
_GELU_CA = F32(np.sqrt(2.0 / np.pi) * 0.044715)
_NEG_INF = F32(-np.inf)
_ZERO = F32(0.0)
_ONE = F32(1.0)
_MINUS_TWO = F32(-2.0)
_EXP_MAX = F32(80.0)


class _Segment(NamedTuple):
    """Sequences that share one batched attention: B slots with T new tokens each.

    A forward runs one or more segments; the dense layers see all their tokens as one matrix.
    """

    tokens: slice  # the segment's B*T rows of the residual stream
    shape: tuple[int, int]  # (B, T)
    positions: np.ndarray  # [B, T] position of each new token
    write_at: tuple[np.ndarray, slice, np.ndarray]  # cache index of each new token's key/value
    rows: slice | np.ndarray  # slots to read keys/values from: a slice reads a view, no copy
    members: np.ndarray | None  # when `rows` spans idle slots too: the batch's rows within it
    kv_len: int  # keys to attend over: the longest sequence after this step
    mask: np.ndarray | None  # additive [R, 1, T, K]: -inf on future/absent keys; None if none


def _normalize(x: np.ndarray, avg: np.ndarray, eps: np.float32) -> np.ndarray:
    """LayerNorm without the affine part (that is folded into the next matmul). Means are
    matmuls with ``avg`` = [C, 1] of 1/C: several times cheaper than ``ndarray.mean``."""
    xc = x - x @ avg
    var = np.square(xc) @ avg
    var += eps
    np.sqrt(var, out=var)
    xc /= var
    return xc


def _gelu(h: np.ndarray) -> np.ndarray:
    """gelu_new(h), in place, as h * sigmoid(2u) with u = c * (h + a h^3): the same function as
    0.5 h (1 + tanh(u)), but numpy's float32 exp is vectorized and its tanh is not (4x)."""
    t = np.square(h)
    t *= _GELU_CA
    t += _GELU_C
    t *= h
    t *= _MINUS_TWO
    np.minimum(t, _EXP_MAX, out=t)  # exp(80) is finite in float32: h / huge = -0, gelu's limit
    np.exp(t, out=t)
    t += _ONE
    h /= t
    return h


class GPT2Engine:
    """A GPT-2 causal LM over a slotted KV cache: ``prefill`` appends a prompt (in chunks if
    wished) to one slot, ``decode`` advances many slots by one token in a single forward."""

    def __init__(
        self,
        config: GPT2Config,
        weights: GPT2Weights,
        max_slots: int = 8,
        max_seq_len: int | None = None,
    ) -> None:
        max_seq_len = config.n_positions if max_seq_len is None else max_seq_len
        if not 1 <= max_seq_len <= config.n_positions:
            raise ValueError(
                f"max_seq_len must be in [1, n_positions={config.n_positions}], got {max_seq_len}."
            )
        if max_slots < 1:
            raise ValueError(f"max_slots must be >= 1, got {max_slots}.")
        self.config = config
        self.max_slots = max_slots
        self.max_seq_len = max_seq_len
        self._eps = F32(config.layer_norm_epsilon)
        self._avg = np.full((config.n_embd, 1), 1.0 / config.n_embd, dtype=F32)
        self._wte = np.ascontiguousarray(weights.wte, dtype=F32)
        self._wpe = np.ascontiguousarray(weights.wpe[:max_seq_len], dtype=F32)
        self._blocks = [fold_block(b, config.head_dim) for b in weights.blocks]
        self._ln_f_w = np.ascontiguousarray(weights.ln_f_weight, dtype=F32)
        self._ln_f_b = np.ascontiguousarray(weights.ln_f_bias, dtype=F32)
        # Used as lm_head.T: a transposed view, so a tied head costs no extra memory.
        self._lm_head_t = np.ascontiguousarray(weights.lm_head, dtype=F32).T
        self._arange = np.arange(max_seq_len, dtype=np.intp)
        self._cache = KVCache(
            config.n_layer, max_slots, config.n_head, max_seq_len, config.head_dim
        )

    @classmethod
    def from_pretrained(
        cls, folder: str | Path, max_slots: int = 8, max_seq_len: int | None = None
    ) -> GPT2Engine:
        """Build an engine from a folder holding ``config.json`` and ``model.safetensors``."""
        folder = Path(folder)
        config = GPT2Config.from_json(folder / CONFIG_FILE)
        return cls(config, load_weights(folder, config), max_slots, max_seq_len)

    def allocate(self) -> int:
        """Claim a free slot (length 0) for a new sequence; raises NoFreeSlotError when full."""
        return self._cache.allocate()

    def release(self, slot: int) -> None:
        """Give a finished sequence's slot back; its cache length resets to 0."""
        self._cache.release(slot)

    def length(self, slot: int) -> int:
        """Tokens cached in ``slot`` (the position the next token will take)."""
        return self._cache.length(slot)

    def free_slots(self) -> int:
        """How many sequences can still be admitted."""
        return self._cache.free_slots()

    def prefill(self, slot: int, token_ids: Sequence[int]) -> np.ndarray:
        """Append ``token_ids`` to ``slot``'s cache (repeat calls = chunked prefill) and return
        float32 logits [vocab] for the last of them."""
        return self.prefill_many([slot], [token_ids])[0]

    def prefill_many(self, slots: Sequence[int], token_ids: Sequence[Sequence[int]]) -> np.ndarray:
        """Prefill several slots, each with its own chunk of any length, in one forward (the
        weights are read once for all prompts); returns logits [len(slots), vocab] of each
        chunk's last token."""
        check_prefill(slots, token_ids)
        return self._run(slots, [np.asarray([t], dtype=np.intp) for t in token_ids])

    def decode(
        self,
        slots: Sequence[int],
        token_ids: Sequence[int],
        between_layers: Callable[[], object] | None = None,
    ) -> np.ndarray:
        """Feed one token to each slot, each at its own position, in one batched forward;
        returns float32 logits [len(slots), vocab].

        ``between_layers`` runs after every layer but the last. It may use other slots of
        this engine (prefill a new sequence, say): the decode touches only its own.
        """
        check_decode(slots, token_ids)
        slot_ids = np.asarray(slots, dtype=np.intp)
        tokens = np.asarray(token_ids, dtype=np.intp)[:, None]
        if np.all(slot_ids[:-1] < slot_ids[1:]):
            return self._run(slots, [tokens], between_layers)
        # In ascending slot order the batch reads the cache as a view, without a gather.
        order = np.argsort(slot_ids)
        logits = np.empty((len(slots), self.config.vocab_size), dtype=F32)
        logits[order] = self._run(slot_ids[order].tolist(), [tokens[order]], between_layers)
        return logits

    def _run(
        self,
        slots: Sequence[int],
        groups: list[np.ndarray],
        between_layers: Callable[[], object] | None = None,
    ) -> np.ndarray:
        """Validate, run the forward and advance the lengths. ``groups`` are the segments'
        token arrays [B_i, T_i], taking ``slots`` in order."""
        news = [g.shape[1] for g in groups for _ in range(g.shape[0])]
        self._cache.check_append(slots, news)
        low = min(int(g.min()) for g in groups)
        high = max(int(g.max()) for g in groups)
        check_token_ids(low, high, self.config.vocab_size)
        slot_ids = np.asarray(slots, dtype=np.intp)
        logits = self._forward(slot_ids, groups, between_layers)
        self._cache.advance(slot_ids, np.asarray(news, dtype=np.intp))
        return logits

    def _forward(
        self,
        slots: np.ndarray,
        groups: list[np.ndarray],
        between_layers: Callable[[], object] | None = None,
    ) -> np.ndarray:
        """Logits of each sequence's last new token; writes the new keys/values to the cache."""
        segments, last_rows, start, first = [], [], 0, 0
        for tokens in groups:
            n_batch, n_tokens = tokens.shape
            segments.append(self._plan(slots[first : first + n_batch], tokens.shape, start))
            last_rows.append(start + n_tokens - 1 + n_tokens * np.arange(n_batch))
            start, first = start + tokens.size, first + n_batch
        ids = np.concatenate([t.ravel() for t in groups]) if len(groups) > 1 else groups[0].ravel()
        positions = np.concatenate([seg.positions.ravel() for seg in segments])
        # The residual stream is kept 2-D [N, C]: numpy runs a 3-D @ 2-D matmul as one gemv
        # per row, re-reading the weights B times; a 2-D matmul is a single gemm.
        x = self._wte[ids]
        x += self._wpe[positions]
        for layer, blk in enumerate(self._blocks):
            if layer and between_layers is not None:
                between_layers()
            x = self._block(layer, blk, x, segments)
        rows = np.concatenate(last_rows) if len(last_rows) > 1 else last_rows[0]
        h = _normalize(x[rows], self._avg, self._eps)
        h *= self._ln_f_w
        h += self._ln_f_b
        return h @ self._lm_head_t

    def _plan(self, slots: np.ndarray, shape: tuple[int, int], start: int) -> _Segment:
        """Positions, cache indices and mask of one segment, shared by every layer."""
        n_batch, n_tokens = shape
        positions = self._cache.lengths[slots][:, None] + self._arange[:n_tokens]
        kv_len = int(positions[:, -1].max()) + 1
        rows, members = KVCache.rows(slots)  # idle rows' stale keys are finite; dropped later
        mask = None
        if int(positions.min()) < kv_len - 1:  # some query must not see some cached key
            hidden = self._arange[:kv_len] > positions[:, None, :, None]
            mask = np.where(hidden, _NEG_INF, _ZERO)
            if isinstance(rows, slice) and members is not None:
                full = np.zeros((rows.stop - rows.start, 1, n_tokens, kv_len), dtype=F32)
                full[members] = mask
                mask = full
        write_at = (slots[:, None], slice(None), positions)
        tokens = slice(start, start + n_batch * n_tokens)
        return _Segment(tokens, shape, positions, write_at, rows, members, kv_len, mask)

    def _block(
        self, layer: int, blk: FoldedBlock, x: np.ndarray, segments: list[_Segment]
    ) -> np.ndarray:
        """One pre-LN transformer block on x [N, C], updated in place."""
        qkv = _normalize(x, self._avg, self._eps) @ blk.attn_w
        qkv += blk.attn_b
        if len(segments) == 1:
            y = self._attend(layer, qkv, segments[0])
        else:
            y = np.empty_like(x)
            for seg in segments:
                y[seg.tokens] = self._attend(layer, qkv[seg.tokens], seg)
        x += y @ blk.proj_w
        x += blk.proj_b
        h = _normalize(x, self._avg, self._eps) @ blk.fc_w
        h += blk.fc_b
        x += _gelu(h) @ blk.mlp_w
        x += blk.mlp_b
        return x

    def _attend(self, layer: int, qkv: np.ndarray, seg: _Segment) -> np.ndarray:
        """Causal self-attention of one segment over its cache: [B*T, 3C] -> [B*T, C]."""
        (n_batch, n_tokens), heads, dim = seg.shape, self.config.n_head, self.config.head_dim
        qkv = qkv.reshape(n_batch, n_tokens, 3, heads, dim)
        k_cache, v_cache = self._cache.k[layer], self._cache.v[layer]
        k_cache[seg.write_at] = qkv[:, :, 1]
        v_cache[seg.write_at] = qkv[:, :, 2]
        keys = k_cache[seg.rows, :, : seg.kv_len]  # [R, H, K, D]
        values = v_cache[seg.rows, :, : seg.kv_len]
        q = qkv[:, :, 0].transpose(0, 2, 1, 3)  # [B, H, T, D]
        if seg.members is not None:
            q_all = np.zeros((keys.shape[0], heads, n_tokens, dim), dtype=F32)
            q_all[seg.members] = q
            q = q_all
        att = q @ keys.transpose(0, 1, 3, 2)  # [R, H, T, K]
        if seg.mask is not None:
            att += seg.mask
        # Softmax; ufunc reductions skip ndarray.max/sum's Python-level wrappers.
        att -= np.maximum.reduce(att, axis=-1, keepdims=True)
        np.exp(att, out=att)
        att /= np.add.reduce(att, axis=-1, keepdims=True)
        y = att @ values
        if seg.members is not None:
            y = y[seg.members]
        return y.transpose(0, 2, 1, 3).reshape(n_batch * n_tokens, heads * dim)
