#!/usr/bin/python3
"""Splits Debian's package descriptions into train / validation / evaluation.

Input: prompts.jsonl from ops/make-prompts.sh (one JSON object per package
with "id", "synopsis", "long", "domain"). A package goes to a split by the
first 8 bytes of sha256(package name), big-endian, modulo 100, against the
[corpus] shares in ops/train/tiers.toml, so the split never depends on the
order of the input or on which other packages exist.

Output, in OUT_DIR:
  train.jsonl, valid.jsonl, eval.jsonl   {"id", "prompt", "reference", "domain"}
  train.txt                              one document per line (tokenizer input)
  split.json                             counts and bytes per split
A document is the prompt followed by the reference (see `prompt_of`): the
prompt names the package and its synopsis, the reference is its long
description, which is what a tier is asked to write and what quality is
measured on (issue 20). Packages without a long description are left out.

Usage: ops/train/corpus.py PROMPTS OUT_DIR [--config ops/train/tiers.toml]
Errors: a missing or malformed input line stops with its line number.
"""
import argparse
import hashlib
import json
import os
import sys
import tomllib


def split_of(name: str, train: int, valid: int) -> str:
    """The split of package `name`: 'train', 'valid' or 'eval'."""
    h = int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "big") % 100
    if h < train:
        return "train"
    if h < train + valid:
        return "valid"
    return "eval"


def prompt_of(name: str, synopsis: str) -> str:
    """The prompt of a package: what the user message holds in chat form."""
    return f"{name}: {synopsis}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("prompts")
    ap.add_argument("out_dir")
    ap.add_argument("--config", default=os.path.join(os.path.dirname(__file__), "tiers.toml"))
    args = ap.parse_args()
    with open(args.config, "rb") as f:
        cfg = tomllib.load(f)["corpus"]
    os.makedirs(args.out_dir, exist_ok=True)
    outs = {s: open(os.path.join(args.out_dir, f"{s}.jsonl"), "w", encoding="utf-8")
            for s in ("train", "valid", "eval")}
    txt = open(os.path.join(args.out_dir, "train.txt"), "w", encoding="utf-8")
    counts = {s: {"documents": 0, "bytes": 0} for s in outs}
    skipped = 0
    with open(args.prompts, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            try:
                d = json.loads(line)
                name, syn, long = d["id"], d["synopsis"], d["long"]
            except (json.JSONDecodeError, KeyError) as e:
                print(f"corpus: {args.prompts}:{n}: {e} (run ops/make-prompts.sh again: "
                      "it writes synopsis and long)", file=sys.stderr)
                return 2
            if not long:
                skipped += 1
                continue
            s = split_of(name, cfg["train"], cfg["valid"])
            rec = {"id": name, "prompt": prompt_of(name, syn), "reference": long,
                   "domain": d.get("domain", "")}
            outs[s].write(json.dumps(rec, ensure_ascii=False) + "\n")
            counts[s]["documents"] += 1
            counts[s]["bytes"] += len(rec["prompt"]) + 1 + len(long)
            if s == "train":
                txt.write(rec["prompt"] + "\n" + long + "\n")
    for o in outs.values():
        o.close()
    txt.close()
    counts["skipped_without_long"] = skipped
    with open(os.path.join(args.out_dir, "split.json"), "w") as f:
        json.dump(counts, f, indent=1)
    print("corpus: " + ", ".join(f"{s} {c['documents']} documents ({c['bytes'] / 1e6:.1f} MB)"
                                 for s, c in counts.items() if isinstance(c, dict))
          + f"; {skipped} without a long description left out", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
