"""A llama.cpp engine for GGUF models: one context whose sequences are our KV slots.

The scheduler's Engine seam on llama-cpp-python's low-level (ctypes) API: every call is one
``llama_decode`` over a single batch holding each slot's new tokens at its own positions
(sequence id = slot), logits are read through a numpy view of llama.cpp's output buffer, and
a released slot keeps its cells as a prefix cache (``allocate_cached``). The KV cache is
split (one buffer per sequence: a token attends over its own cells; a decode step's short
gaps between slots are padded to keep it one pass, seq_runs.py, and a gap that stays is
closed by moving a slot to another sequence, llama_seqs.py) unless ``unified_kv`` (one
buffer for all: any mix of slots and chunk lengths in one pass; see the setting).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InvalidSettings
from .gguf_vocab import GGUFVocab
from .llama_batch import LogitsViews, NumpyBatch, chunk_layout
from .llama_lib import check_sizes, context_for, default_threads, llama_errors, load_model
from .llama_seqs import LlamaSeqs
from .prefix_cache import SlotPrefixes
from .seams import check_decode, check_prefill, check_token_ids
from .seq_runs import PaddedStep, pad_gaps, rows_per_pass

DEFAULT_BATCH_TOKENS = 512


class LlamaCppEngine:
    """A GGUF causal LM over llama.cpp with ``max_slots`` sequences of ``context_length``
    tokens each; the same allocate / release / prefill_many / decode seam as GPT2Engine."""

    def __init__(
        self,
        lib: Any,
        model: Any,
        path: Path,
        max_slots: int,
        context_per_slot: int,
        threads: int,
        batch_tokens: int = DEFAULT_BATCH_TOKENS,
        unified_kv: bool = False,
        prefix_cache: bool = True,
    ) -> None:
        self._lib, self._model, self._ctx, self.path = lib, model, None, path
        self.max_slots, self.context_length, self.threads = max_slots, context_per_slot, threads
        self.unified_kv = unified_kv
        # A pad's cell can be cut again only where the state is per cell (not recurrent);
        # the same models move sequences to close gaps.
        stateful = lib.llama_model_is_recurrent(model) or lib.llama_model_is_hybrid(model)
        self._pad = self._compact = not unified_kv and not stateful
        params = lib.llama_context_default_params()
        params.n_ctx = max_slots * context_per_slot
        params.n_batch = params.n_ubatch = self.batch_tokens = batch_tokens
        params.n_seq_max = max_slots
        params.kv_unified = unified_kv  # the trade-off: TextGenerationSettings.kv_unified
        params.n_threads = params.n_threads_batch = threads
        params.no_perf = True
        llama_errors.clear()
        ctx = lib.llama_init_from_model(model, params)
        if not ctx:
            self.close()
            raise InvalidSettings(
                f"llama.cpp could not create a context for {path} with {max_slots} slots of "
                f"{context_per_slot} tokens: {' '.join(llama_errors) or 'no error message'}"
            )
        self._ctx = ctx
        self.vocab = vocab = GGUFVocab(lib, model, path, owns_model=False)
        self.tokenizer, self.vocab_size = vocab.tokenizer, vocab.tokenizer.vocab_size
        self.bos_token_id, self.eos_token_id = vocab.bos_token_id, vocab.eos_token_id
        self.add_bos, self.architecture = vocab.add_bos, vocab.architecture
        self.chat_template = vocab.chat_template
        compact = not unified_kv  # split KV batches consecutive slots only: keep them together
        self._prefixes = (
            SlotPrefixes(max_slots, context_per_slot, compact) if prefix_cache else None
        )
        self.seqs = LlamaSeqs(lib, ctx, max_slots, context_per_slot, self._prefixes, not stateful)
        self._memory, self._lengths = self.seqs.memory, self.seqs.lengths  # by sequence
        self._batch = NumpyBatch(lib, batch_tokens)
        self._ones = np.ones(max(max_slots, batch_tokens), dtype=np.int8)
        self._views = LogitsViews(self.vocab_size, 4 * batch_tokens)
        self.max_pad = rows_per_pass(self._scratch_decode, min(max_slots, 8)) if self._pad else 0

    @classmethod
    def from_gguf(
        cls,
        path: str | Path,
        *,
        max_slots: int,
        context_per_slot: int | None = None,
        threads: int | None = None,
        batch_tokens: int = DEFAULT_BATCH_TOKENS,
        unified_kv: bool = False,
        prefix_cache: bool = True,
    ) -> LlamaCppEngine:
        """Load a GGUF file; ``context_per_slot`` defaults to the model's training context
        (``n_ctx_train``) and may not exceed it; ``threads`` defaults to the usable cores
        but one (see ``default_threads``); ``prefix_cache`` False clears a slot's KV at
        release."""
        path = Path(path)
        threads = default_threads() if threads is None else threads
        check_sizes(max_slots=max_slots, batch_tokens=batch_tokens, threads=threads)
        lib, model = load_model(path)
        context = context_for(lib, model, path, context_per_slot)
        return cls(
            lib, model, path, max_slots, context, threads, batch_tokens, unified_kv, prefix_cache
        )

    def close(self) -> None:
        """Free the context and the model (also done when the engine is collected)."""
        if getattr(self, "_ctx", None):
            self._lib.llama_free(self._ctx)
            self._ctx = None
        if getattr(self, "_model", None):
            self._lib.llama_model_free(self._model)
            self._model = None

    def __del__(self) -> None:
        self.close()

    def allocate(self) -> int:
        """Claim the slot on the lowest free sequence (length 0); raises NoFreeSlotError
        when all are taken."""
        return self.seqs.claim(int(self.seqs.free()[0]), 0)

    def allocate_cached(self, token_ids: Sequence[int]) -> tuple[int, int]:
        """Claim the free slot the prefix cache chooses for ``token_ids`` (prefix_cache.py;
        a longer prefix in a slot in use is copied in); returns it and how many leading
        tokens it holds (never all: the last needs logits)."""
        return self.seqs.claim_cached(token_ids)

    def release(self, slot: int) -> None:
        """Give a slot back; its KV cells stay, for a later prompt with the same prefix (or,
        without the prefix cache, are removed from llama.cpp's cache at once)."""
        self._check([slot], [0])
        self.seqs.release(slot)

    def length(self, slot: int) -> int:
        """Tokens cached in ``slot`` (the position the next token will take)."""
        self._check([slot], [0])
        return int(self._lengths[self.seqs.seq_of[slot]])

    def free_slots(self) -> int:
        """How many sequences can still be admitted."""
        return self.max_slots - int(self.seqs.in_use.sum())

    def prefill_many(self, slots: Sequence[int], token_ids: Sequence[Sequence[int]]) -> np.ndarray:
        """Append each slot's chunk at its current position (repeat calls = chunked prefill),
        all in one llama_decode; returns float32 logits [len(slots), vocab] of each chunk's
        last token."""
        check_prefill(slots, token_ids)
        if all(len(chunk) == 1 for chunk in token_ids):  # a cached prompt's last token
            return self.decode(slots, [chunk[0] for chunk in token_ids])
        return self.forward(slots, token_ids)

    def decode(
        self,
        slots: Sequence[int],
        token_ids: Sequence[int],
        between_layers: Callable[[], object] | None = None,
    ) -> np.ndarray:
        """Feed one token to each slot at its own position in one llama_decode; returns
        float32 logits [len(slots), vocab]. ``between_layers`` is not called: llama_decode
        runs the whole graph, and after it would delay these tokens for nothing."""
        del between_layers
        check_decode(slots, token_ids)
        n = len(slots)
        # forward's arithmetic in a few vector ops (one slot: in scalars): at a small model
        # and one stream the Python around llama_decode was a fifth of the step.
        if n == 1:
            return self._decode_one(int(slots[0]), int(token_ids[0]))
        self._check(slots, self._ones[:n])
        self._check_ids(min(token_ids), max(token_ids))
        seqs = self.seqs
        seqs.steps += 1
        seq = seqs.seq_of[slots]
        if self._compact and seqs.compact(seq):
            seq = seqs.seq_of[slots]  # a slot moved to another sequence
        tokens = np.asarray(token_ids, dtype=np.int32)
        pos = self._lengths[seq].astype(np.int32)
        if self._prefixes is not None:
            self._prefixes.write(seq, pos, tokens)
        padded = self._pad and pad_gaps(
            tokens, seq, self._lengths, self.context_length, self.max_pad
        )
        if padded:
            return self._decode_padded(padded, seq)
        self._decode(tokens, pos, seq, self._ones[:n])
        self._lengths[seq] += 1
        return self._logits(n).copy()  # the buffer is reused by the next call

    def _decode_padded(self, step: PaddedStep, seq: np.ndarray) -> np.ndarray:
        """A split-KV step as one run (seq_runs.py); logits in the caller's slot order."""
        self._decode(step.tokens, step.pos, step.seq, step.wants)
        for pad in step.pads.tolist():
            self._lib.llama_memory_seq_rm(self._memory, pad, int(self._lengths[pad]), -1)
        self._lengths[seq] += 1
        return self._logits(seq.size)[np.argsort(step.rows)]  # row i is caller's rows[i]

    def _scratch_decode(self, k: int) -> None:
        """A step of one token in each of the first ``k`` slots, all empty, emptied after."""
        zeros = np.zeros(k, dtype=np.int32)
        self._batch.fill(zeros, zeros, np.arange(k, dtype=np.int32), self._ones[:k])
        self._run()
        self._lib.llama_memory_seq_rm(self._memory, -1, -1, -1)  # every sequence: at load

    def forward(self, slots: Sequence[int], token_ids: Sequence[Sequence[int]]) -> np.ndarray:
        """Any mix of prefill chunks and single decode tokens, one llama_decode per
        ``batch_tokens`` tokens (one for any step within it); logits of each slot's last."""
        counts = [len(t) for t in token_ids]
        if not counts or min(counts) < 1:
            raise ValueError(f"forward needs at least one token per slot, got lengths {counts}.")
        self._check(slots, counts)
        seq = self.seqs.seq_of[slots]
        flat, pos, seq_of, wants = chunk_layout(seq, token_ids, counts, self._lengths)
        self._check_ids(int(flat.min()), int(flat.max()))
        if self._prefixes is not None:
            self._prefixes.write(seq_of, pos, flat)
        out = np.empty((len(slots), self.vocab_size), dtype=np.float32)
        done = 0
        for begin in range(0, flat.size, self.batch_tokens):
            end = min(begin + self.batch_tokens, flat.size)
            n_out = self._decode(
                flat[begin:end], pos[begin:end], seq_of[begin:end], wants[begin:end]
            )
            if n_out:
                out[done : done + n_out] = self._logits(n_out)  # the buffer is reused next call
                done += n_out
        self._lengths[seq] += counts
        return out

    def _decode_one(self, slot: int, token: int) -> np.ndarray:
        seqs = self.seqs
        seqs.steps += 1
        seq = int(seqs.seq_of[slot]) if 0 <= slot < self.max_slots else -1
        if seq < 0 or not seqs.in_use[seq] or self._lengths[seq] >= self.context_length:
            self._check([slot], [1])  # raises the error that says which rule
        length = int(self._lengths[seq])
        self._check_ids(token, token)
        if self._prefixes is not None:
            self._prefixes.tokens[seq, length] = token
        self._batch.fill_one(token, length, seq)
        self._run()
        self._lengths[seq] = length + 1
        return self._logits(1).copy()

    def _decode(
        self,
        tokens: np.ndarray,
        pos: np.ndarray,
        seq: np.ndarray,
        wants: np.ndarray,
    ) -> int:
        self._batch.fill(tokens, pos, seq, wants)
        self._run()
        return int(wants.sum())

    def _run(self) -> None:
        """llama_decode of the filled batch; on failure the batch's sequences' cells past
        their lengths are dropped and the error raised."""
        status = self._lib.llama_decode(self._ctx, self._batch.batch)
        if status != 0:
            batch = self._batch
            for seq in np.unique(batch.arrays["seq"][: batch.batch.n_tokens]).tolist():
                # drop whatever part of this step reached the cache
                self._lib.llama_memory_seq_rm(self._memory, seq, int(self._lengths[seq]), -1)
            raise RuntimeError(
                f"llama_decode failed with status {status}: {' '.join(llama_errors)}"
            )

    def _logits(self, rows: int) -> np.ndarray:
        return self._views.rows(self._lib.llama_get_logits(self._ctx), rows)

    def _check_ids(self, low: int, high: int) -> None:
        check_token_ids(low, high, self.vocab_size)

    def _check(self, slots: Sequence[int], counts: Sequence[int] | np.ndarray) -> None:
        self.seqs.check(slots, counts)
