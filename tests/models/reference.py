#!/usr/bin/python3
"""Reference data for tests/models/models.test.cpp: what SentencePiece and
PyTorch say about the trained tier models committed under models/.

Writes into OUT_DIR:
  tokens.jsonl        every evaluation prompt and reference (models/eval.jsonl)
                      with SentencePiece's ids ({"text", "ids"}; no BOS)
  prompts.jsonl       the first N_PROMPTS evaluation documents as the tiers
                      saw them in training (<s> + ChatML, ops/train/train.py's
                      encode), cut to the context: {"text", "ids"}
  <tier>.logits.f32   PyTorch's logits at every position of the first
                      N_LOGITS prompts, f32 [positions][n_vocab]
  <tier>.argmax.i32   PyTorch's argmax at every position of all prompts
for every tier of models/manifest.json, run from its F16 GGUF
(ops/train/gguf_torch.py: the GGUF's own weights, upcast to f32).

Usage: tests/models/reference.py SOURCE_DIR OUT_DIR
"""
import json
import os
import sys

import numpy as np
import sentencepiece as spm
import torch

N_PROMPTS, N_LOGITS = 200, 8


def main() -> int:
    src, out = sys.argv[1], sys.argv[2]
    sys.path.insert(0, os.path.join(src, "ops", "train"))
    from gguf_torch import load_llama  # noqa: E402
    from train import encode, render  # noqa: E402

    torch.set_num_threads(2)
    os.makedirs(out, exist_ok=True)
    sp = spm.SentencePieceProcessor(model_file=os.path.join(src, "models", "tokenizer.model"))
    with open(os.path.join(src, "models", "eval.jsonl"), encoding="utf-8") as f:
        docs = [json.loads(line) for line in f]
    with open(os.path.join(out, "tokens.jsonl"), "w", encoding="utf-8") as f:
        for d in docs:
            for text in (d["prompt"], d["reference"]):
                f.write(json.dumps({"text": text, "ids": sp.encode(text)}) + "\n")

    with open(os.path.join(src, "models", "manifest.json")) as f:
        manifest = json.load(f)["models"]
    tiers = [m for m in manifest if m["type"] == "f16"]
    prompts = []
    for d in docs[:N_PROMPTS]:
        text = render(d["prompt"], d["reference"])
        prompts.append({"text": text, "ids": [sp.bos_id()] + encode(sp, text)})
    for t in tiers:
        model = load_llama(os.path.join(src, "models", t["file"]))
        ctx = model.c.context
        logits, argmax = [], []
        with torch.no_grad():
            for i, p in enumerate(prompts):
                ids = p["ids"][:ctx]
                y = model(torch.tensor([ids]))[0]
                argmax.append(y.argmax(-1).numpy().astype("<i4"))
                if i < N_LOGITS:
                    logits.append(y.numpy().astype("<f4"))
        np.concatenate(logits).tofile(os.path.join(out, t["tier"] + ".logits.f32"))
        np.concatenate(argmax).tofile(os.path.join(out, t["tier"] + ".argmax.i32"))
        print(f"reference: {t['tier']}: {sum(len(a) for a in argmax)} positions", file=sys.stderr)
    with open(os.path.join(out, "prompts.jsonl"), "w", encoding="utf-8") as f:
        for p in prompts:
            f.write(json.dumps(p) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
