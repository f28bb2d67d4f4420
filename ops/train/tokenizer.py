#!/usr/bin/python3
"""Trains the tiers' SentencePiece vocabulary on the train split.

A BPE model with byte fallback (sentencepiece 0.1.97, Debian
python3-sentencepiece), i.e. a llama-style SPM vocabulary: <unk> = 0,
<s> = 1, </s> = 2, then the 256 byte tokens <0x00>..<0xFF>, ChatML's
<|im_start|> and <|im_end|> as user-defined (never split) symbols, then the
merges. Settings come from [tokenizer] in ops/train/tiers.toml.

Input: CORPUS_DIR/train.txt (ops/train/corpus.py). Output:
CORPUS_DIR/tokenizer.model (and .vocab). Deterministic for one input and
seed (the sampled sentences are drawn with the seed).

Usage: ops/train/tokenizer.py CORPUS_DIR [--config ops/train/tiers.toml]
"""
import argparse
import os
import sys
import tomllib

import sentencepiece as spm

CHAT_SYMBOLS = ["<|im_start|>", "<|im_end|>"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("corpus_dir")
    ap.add_argument("--config", default=os.path.join(os.path.dirname(__file__), "tiers.toml"))
    args = ap.parse_args()
    with open(args.config, "rb") as f:
        cfg = tomllib.load(f)["tokenizer"]
    text = os.path.join(args.corpus_dir, "train.txt")
    if not os.path.exists(text):
        print(f"tokenizer: {text} is missing (run ops/train/corpus.py first)", file=sys.stderr)
        return 2
    prefix = os.path.join(args.corpus_dir, "tokenizer")
    spm.SentencePieceTrainer.train(
        input=text,
        model_prefix=prefix,
        model_type="bpe",
        vocab_size=cfg["vocab_size"],
        character_coverage=cfg["character_coverage"],
        byte_fallback=True,
        split_digits=True,
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        user_defined_symbols=CHAT_SYMBOLS,
        input_sentence_size=cfg["input_sentence_size"],
        shuffle_input_sentence=True,
        seed_sentencepiece_size=1000000,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        add_dummy_prefix=True,
        allow_whitespace_only_pieces=True,
        num_threads=2,
        minloglevel=2,
    )
    sp = spm.SentencePieceProcessor(model_file=prefix + ".model")
    sample = "libtag1v5: audio meta-data library"
    print(f"tokenizer: {prefix}.model, {sp.get_piece_size()} pieces; "
          f"'{sample}' -> {len(sp.encode(sample))} tokens", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
