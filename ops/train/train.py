#!/usr/bin/python3
"""Trains one tier model of ops/train/tiers.toml on the train split.

Data: CORPUS_DIR/train.jsonl and valid.jsonl (ops/train/corpus.py), tokenized
with CORPUS_DIR/tokenizer.model (ops/train/tokenizer.py). Each document is
rendered in ChatML as Shoal's chat template renders a one-turn chat
(engine/chat_template.cpp) followed by the answer:
  <s><|im_start|>user\\n{prompt}<|im_end|>\\n<|im_start|>assistant\\n{reference}<|im_end|>
tokenized as llama.cpp and Shoal tokenize that text (see `encode`), and the
documents are concatenated into one token stream, cut into windows of
[train] context tokens (next-token loss on every position).

Optimizer: AdamW with linear warm-up and cosine decay to lr·min_lr_ratio over
the tier's `tokens` (Loshchilov & Hutter 2019); gradient clipping. Seeded
(torch, the window order). Progress every log_every steps on stderr and in
OUT_DIR/<tier>/train.log: step, tokens seen, loss, tokens/s, ETA; validation
loss every eval_every steps on the first valid_docs validation documents.

Checkpoints: OUT_DIR/<tier>/checkpoint.pt (model, optimizer, step, RNG
state, the data order) every checkpoint_every_s seconds and at the end,
written to a temporary file and renamed, so a run killed at any moment
resumes from its last checkpoint when started again with the same
arguments. A finished run writes OUT_DIR/<tier>/done.json (parameters,
tokens seen, validation loss and perplexity on the whole validation split,
training seconds) and does nothing when started again.

Usage: ops/train/train.py CORPUS_DIR OUT_DIR TIER [--config tiers.toml]
       [--max-steps N]   (stop after N steps this run: smoke tests)
"""
import argparse
import json
import math
import os
import re
import sys
import time
import tomllib

import numpy as np
import sentencepiece as spm
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(__file__))
from model import config as model_config, llama  # noqa: E402


SPECIAL = re.compile(r"(<\|im_start\|>|<\|im_end\|>)")


def render(prompt: str, reference: str) -> str:
    """One training document in ChatML (without <s>, added as a token id)."""
    return (f"<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n"
            f"{reference}<|im_end|>")


def encode(sp, text: str) -> list[int]:
    """Token ids of `text` as llama.cpp's SPM tokenizer (and Shoal's,
    engine/tokenizer.cpp) makes them: split at the ChatML symbols, each
    symbol one token, each text fragment encoded on its own with the
    dummy-prefix space (add_space_prefix). SentencePiece on the whole string
    would instead put a lone '▁' before a leading symbol and none after one."""
    ids = []
    for part in SPECIAL.split(text):
        if not part:
            continue
        ids.extend([sp.piece_to_id(part)] if SPECIAL.fullmatch(part) else sp.encode(part))
    return ids


def token_stream(sp, path: str, limit: int | None = None) -> np.ndarray:
    """Token ids of the documents of a .jsonl split, each led by <s>."""
    ids = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f):
            if limit is not None and n >= limit:
                break
            d = json.loads(line)
            ids.append(sp.bos_id())
            ids.extend(encode(sp, render(d["prompt"], d["reference"])))
    return np.asarray(ids, dtype=np.int64)


def cached_stream(sp, corpus: str, split: str, limit=None) -> np.ndarray:
    """token_stream, cached in CORPUS_DIR/<split>[.<limit>].tokens.npy."""
    name = split + (f".{limit}" if limit is not None else "") + ".tokens.npy"
    path = os.path.join(corpus, name)
    if os.path.exists(path) and os.path.getmtime(path) >= os.path.getmtime(
            os.path.join(corpus, "tokenizer.model")):
        return np.load(path)
    arr = token_stream(sp, os.path.join(corpus, split + ".jsonl"), limit)
    np.save(path + ".tmp.npy", arr)
    os.replace(path + ".tmp.npy", path)
    return arr


@torch.no_grad()
def mean_loss(model, stream: np.ndarray, context: int, batch: int) -> float:
    """Mean next-token cross-entropy (nats) over non-overlapping windows."""
    model.eval()
    n = (len(stream) - 1) // context
    total, count = 0.0, 0
    for i in range(0, n, batch):
        rows = range(i, min(n, i + batch))
        x = torch.from_numpy(np.stack([stream[r * context:(r + 1) * context] for r in rows]))
        y = torch.from_numpy(np.stack([stream[r * context + 1:(r + 1) * context + 1] for r in rows]))
        logits = model(x)
        total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1),
                                 reduction="sum").item()
        count += y.numel()
    model.train()
    return total / max(count, 1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("corpus_dir")
    ap.add_argument("out_dir")
    ap.add_argument("tier")
    ap.add_argument("--config", default=os.path.join(os.path.dirname(__file__), "tiers.toml"))
    ap.add_argument("--max-steps", type=int, default=None)
    args = ap.parse_args()
    with open(args.config, "rb") as f:
        cfg = tomllib.load(f)
    tc = cfg["train"]
    tiers = {t["name"]: t for t in cfg["tiers"]}
    if args.tier not in tiers:
        print(f"train: unknown tier '{args.tier}' (tiers.toml has {', '.join(tiers)})",
              file=sys.stderr)
        return 2
    tier = tiers[args.tier]
    out = os.path.join(args.out_dir, args.tier)
    os.makedirs(out, exist_ok=True)
    if os.path.exists(os.path.join(out, "done.json")):
        print(f"train: {args.tier} is trained already ({out}/done.json)", file=sys.stderr)
        return 0
    torch.set_num_threads(tc["threads"])
    torch.manual_seed(tc["seed"])
    sp = spm.SentencePieceProcessor(model_file=os.path.join(args.corpus_dir, "tokenizer.model"))
    train = cached_stream(sp, args.corpus_dir, "train")
    valid_small = cached_stream(sp, args.corpus_dir, "valid", cfg["corpus"]["valid_docs"])
    ctx, batch = tc["context"], tc["batch"]
    mc = model_config(vocab=sp.get_piece_size(), dim=tier["dim"], layers=tier["layers"],
                      heads=tier["heads"], ffn=tier["ffn"], context=ctx)
    model = llama(mc)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": tc["weight_decay"]},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=tc["lr"], betas=(tc["beta1"], tc["beta2"]))
    tokens_per_step = batch * ctx
    total_steps = max(1, tier["tokens"] // tokens_per_step)
    n_windows = (len(train) - 1) // ctx
    rng = np.random.default_rng(tc["seed"])
    order = rng.permutation(n_windows)
    step, trained_s = 0, 0.0
    ck_path = os.path.join(out, "checkpoint.pt")
    if os.path.exists(ck_path):
        ck = torch.load(ck_path)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        step, trained_s, order = ck["step"], ck["trained_s"], ck["order"]
        torch.set_rng_state(ck["torch_rng"])
        print(f"train: {args.tier}: resuming at step {step} of {total_steps}", file=sys.stderr)

    def save():
        tmp = ck_path + ".tmp"
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step,
                    "trained_s": trained_s, "order": order, "torch_rng": torch.get_rng_state()},
                   tmp)
        os.replace(tmp, ck_path)

    def lr_at(s: int) -> float:
        if s < tc["warmup_steps"]:
            return tc["lr"] * (s + 1) / tc["warmup_steps"]
        p = (s - tc["warmup_steps"]) / max(1, total_steps - tc["warmup_steps"])
        lo = tc["lr"] * tc["min_lr_ratio"]
        return lo + 0.5 * (tc["lr"] - lo) * (1 + math.cos(math.pi * min(1.0, p)))

    log = open(os.path.join(out, "train.log"), "a")

    def say(msg: str):
        print(msg, file=sys.stderr, flush=True)
        log.write(msg + "\n")
        log.flush()

    say(f"train: {args.tier}: {model.non_embedding_parameters():,} non-embedding parameters, "
        f"{sum(p.numel() for p in model.parameters()):,} in all; {total_steps} steps of "
        f"{tokens_per_step} tokens; train split {len(train):,} tokens")
    last_ck = time.monotonic()
    t_window, tok_window = time.monotonic(), 0
    steps_this_run = 0
    model.train()
    while step < total_steps:
        if args.max_steps is not None and steps_this_run >= args.max_steps:
            break
        t0 = time.monotonic()
        idx = [order[(step * batch + i) % n_windows] for i in range(batch)]
        x = torch.from_numpy(np.stack([train[w * ctx:(w + 1) * ctx] for w in idx]))
        y = torch.from_numpy(np.stack([train[w * ctx + 1:(w + 1) * ctx + 1] for w in idx]))
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        logits = model(x)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), tc["grad_clip"])
        opt.step()
        step += 1
        steps_this_run += 1
        trained_s += time.monotonic() - t0
        tok_window += tokens_per_step
        if step % tc["log_every"] == 0 or step == total_steps:
            rate = tok_window / max(1e-9, time.monotonic() - t_window)
            eta = (total_steps - step) * tokens_per_step / max(rate, 1e-9)
            say(f"train: {args.tier}: step {step}/{total_steps} tokens {step * tokens_per_step:,} "
                f"loss {loss.item():.4f} lr {lr_at(step):.2e} {rate:,.0f} tokens/s "
                f"ETA {eta / 60:.1f} min")
            t_window, tok_window = time.monotonic(), 0
        if step % tc["eval_every"] == 0:
            v = mean_loss(model, valid_small, ctx, batch)
            say(f"train: {args.tier}: step {step} validation loss {v:.4f} "
                f"(perplexity {math.exp(v):.2f}, first {cfg['corpus']['valid_docs']} documents)")
        if time.monotonic() - last_ck >= tc["checkpoint_every_s"]:
            save()
            last_ck = time.monotonic()
    save()
    if step < total_steps:
        say(f"train: {args.tier}: stopped at step {step}/{total_steps} (--max-steps); "
            "run again to resume")
        return 0
    valid = cached_stream(sp, args.corpus_dir, "valid")
    v = mean_loss(model, valid, ctx, batch)
    done = {"tier": args.tier, "non_embedding_parameters": model.non_embedding_parameters(),
            "parameters": sum(p.numel() for p in model.parameters()),
            "tokens_seen": step * tokens_per_step, "validation_loss": v,
            "validation_perplexity": math.exp(v), "training_seconds": round(trained_s, 1),
            "steps": step, "config": tier}
    with open(os.path.join(out, "done.json"), "w") as f:
        json.dump(done, f, indent=1)
    say(f"train: {args.tier}: done, validation perplexity {math.exp(v):.2f} "
        f"({step * tokens_per_step:,} tokens, {trained_s / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
