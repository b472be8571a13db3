"""Tiny random GGUF models written with the `gguf` package, for llama.cpp engine tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

BOS, EOS, EOT = "<s>", "</s>", "<|im_end|>"
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}</s>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
MERGES = [("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("l", "l"), ("Ġ", "a")]


def byte_tokens() -> list[str]:
    """GPT-2's byte-to-unicode alphabet: token i is the printable stand-in of byte i."""
    keep = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    chars, extra = {}, 0
    for b in range(256):
        if b in keep:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in range(256)]


def write_tiny_llama(
    path: Path,
    *,
    n_layer: int = 2,
    n_embd: int = 64,
    n_head: int = 4,
    n_head_kv: int = 2,
    n_ff: int = 128,
    context_length: int = 128,
    seed: int = 0,
    eos: bool = True,
    eot: bool = False,
) -> Path:
    """A random Llama-architecture GGUF (GQA, RMSNorm, RoPE, SwiGLU) with a byte-level BPE
    vocabulary (256 bytes, a few merges, ``<s>``/``</s>`` as control tokens) and a chat
    template; any text tokenizes. ``eot`` adds an end-of-turn token (``<|im_end|>``) apart
    from eos, as instruct models have; ``eos`` False leaves eos out. Returns ``path``."""
    import gguf

    specials = [BOS, EOS] + ([EOT] if eot else [])
    tokens = byte_tokens() + ["".join(m) for m in MERGES] + specials
    normal, control = gguf.TokenType.NORMAL, gguf.TokenType.CONTROL
    types = [normal] * (len(tokens) - len(specials)) + [control] * len(specials)
    n_vocab, head_dim = len(tokens), n_embd // n_head
    rng = np.random.default_rng(seed)

    def weight(*shape: int) -> np.ndarray:  # numpy shape = ggml ne reversed: [out, in]
        return (rng.standard_normal(shape) * 0.2).astype(np.float32)

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny-random-llama")
    writer.add_context_length(context_length)
    writer.add_embedding_length(n_embd)
    writer.add_block_count(n_layer)
    writer.add_feed_forward_length(n_ff)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_head_kv)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges([" ".join(m) for m in MERGES])
    writer.add_bos_token_id(tokens.index(BOS))
    if eos:
        writer.add_eos_token_id(tokens.index(EOS))
    if eot:
        writer.add_eot_token_id(tokens.index(EOT))
    writer.add_add_bos_token(True)
    writer.add_chat_template(CHAT_TEMPLATE)

    writer.add_tensor("token_embd.weight", weight(n_vocab, n_embd))
    writer.add_tensor("output_norm.weight", np.ones(n_embd, dtype=np.float32))
    writer.add_tensor("output.weight", weight(n_vocab, n_embd))
    for i in range(n_layer):
        blk = f"blk.{i}"
        writer.add_tensor(f"{blk}.attn_norm.weight", np.ones(n_embd, dtype=np.float32))
        writer.add_tensor(f"{blk}.attn_q.weight", weight(n_head * head_dim, n_embd))
        writer.add_tensor(f"{blk}.attn_k.weight", weight(n_head_kv * head_dim, n_embd))
        writer.add_tensor(f"{blk}.attn_v.weight", weight(n_head_kv * head_dim, n_embd))
        writer.add_tensor(f"{blk}.attn_output.weight", weight(n_embd, n_head * head_dim))
        writer.add_tensor(f"{blk}.ffn_norm.weight", np.ones(n_embd, dtype=np.float32))
        writer.add_tensor(f"{blk}.ffn_gate.weight", weight(n_ff, n_embd))
        writer.add_tensor(f"{blk}.ffn_up.weight", weight(n_ff, n_embd))
        writer.add_tensor(f"{blk}.ffn_down.weight", weight(n_embd, n_ff))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
