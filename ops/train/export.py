#!/usr/bin/python3
"""Writes a trained tier (ops/train/train.py) as a llama GGUF file.

Format: GGUF version 3 (ggml's docs/gguf.md): header, metadata key/values,
tensor infos, then the tensors aligned to 32 bytes. The tensor names and
shapes are llama.cpp's for `general.architecture = llama` (token_embd,
blk.N.attn_{norm,q,k,v,output}, blk.N.ffn_{norm,gate,up,down}, output_norm,
output); a PyTorch Linear weight [out, in] is ggml's ne = [in, out], so its
row-major bytes are written as they are. Norms stay F32 (as llama.cpp
writes them); matrices are F32 or F16 (--type). Quantized types (Q8_0) are
made from the F16 file by Shoal's own quantizer (kernels/quant, ggml's block
formats), not here.

The vocabulary is the tokenizer.model's (tokenizer.ggml.model = llama: its
pieces, scores and types; ChatML's <|im_start|> and <|im_end|> as control
tokens), with ChatML as the chat template. `general.*` records where the
model comes from: the data source, training tokens, validation loss and
perplexity (from the tier's done.json).

With --manifest, the file's entry in that JSON manifest (models/manifest.json)
is added or replaced: file name, sha256, type, parameters, tokens seen,
validation perplexity and training time. With --existing, GGUF is not
written but only recorded in the manifest (e.g. the Q8_0 file `shoal
quantize` made from the F16 one; --type names its type).

Usage: ops/train/export.py CORPUS_DIR OUT_DIR TIER GGUF [--type f32|f16|q8_0]
                           [--manifest PATH] [--existing]
Errors: a tier that has not finished training (no done.json) stops with a
message naming it.
"""
import argparse
import hashlib
import json
import os
import struct
import sys
import tomllib

import numpy as np
import sentencepiece as spm
import torch

sys.path.insert(0, os.path.dirname(__file__))
from model import config as model_config, llama  # noqa: E402

CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
          "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
ALIGN = 32
# GGUF metadata value types.
U32, I32, F32, BOOL, STRING, ARRAY, U64 = 4, 5, 6, 7, 8, 9, 10
# ggml tensor types and llama file types.
GGML_F32, GGML_F16 = 0, 1
FILE_TYPE = {"f32": 0, "f16": 1, "q8_0": 7}  # llama_ftype; q8_0 only with --existing


def gguf_string(s: str) -> bytes:
    b = s.encode("utf-8")
    return struct.pack("<Q", len(b)) + b


def gguf_value(kind: int, v) -> bytes:
    if kind == U32:
        return struct.pack("<I", v)
    if kind == I32:
        return struct.pack("<i", v)
    if kind == F32:
        return struct.pack("<f", v)
    if kind == U64:
        return struct.pack("<Q", v)
    if kind == BOOL:
        return struct.pack("<B", 1 if v else 0)
    if kind == STRING:
        return gguf_string(v)
    raise ValueError(f"unsupported metadata type {kind}")


def gguf_kv(key: str, kind: int, v, elem: int | None = None) -> bytes:
    out = gguf_string(key) + struct.pack("<I", kind)
    if kind == ARRAY:
        out += struct.pack("<IQ", elem, len(v))
        if elem == F32:
            return out + np.asarray(v, dtype="<f4").tobytes()
        if elem == I32:
            return out + np.asarray(v, dtype="<i4").tobytes()
        return out + b"".join(gguf_value(elem, x) for x in v)
    return out + gguf_value(kind, v)


def vocabulary(sp):
    """Pieces, scores and GGUF token types (1 normal, 2 unknown, 3 control, 6 byte)."""
    tokens, scores, types = [], [], []
    for i in range(sp.get_piece_size()):
        piece = sp.id_to_piece(i)
        tokens.append(piece)
        scores.append(sp.get_score(i))
        if sp.is_unknown(i):
            types.append(2)
        elif sp.is_control(i) or piece in ("<|im_start|>", "<|im_end|>"):
            types.append(3)
        elif sp.is_byte(i):
            types.append(6)
        else:
            types.append(1)
    return tokens, scores, types


def update_manifest(path: str, gguf: str, kind: str, done: dict):
    """Adds or replaces `gguf`'s entry in the manifest at `path`."""
    entries = []
    if os.path.exists(path):
        with open(path) as f:
            entries = json.load(f)["models"]
    h = hashlib.sha256()
    with open(gguf, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    entry = {"file": os.path.basename(gguf), "sha256": h.hexdigest(), "type": kind,
             "tier": done["tier"], "non_embedding_parameters": done["non_embedding_parameters"],
             "parameters": done["parameters"], "tokens_seen": done["tokens_seen"],
             "training_seconds": done["training_seconds"]}
    if kind in ("f32", "f16"):  # PyTorch's figure; quantized files are measured by bench/
        entry["validation_perplexity"] = round(done["validation_perplexity"], 3)
    entries = [e for e in entries if e["file"] != entry["file"]] + [entry]
    entries.sort(key=lambda e: (e["parameters"], e["file"]))
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"source": "ops/train-tiers.sh (hyper-parameters: ops/train/tiers.toml)",
                   "models": entries}, f, indent=1)
        f.write("\n")
    os.replace(tmp, path)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("corpus_dir")
    ap.add_argument("out_dir")
    ap.add_argument("tier")
    ap.add_argument("gguf")
    ap.add_argument("--type", choices=sorted(FILE_TYPE), default="f16")
    ap.add_argument("--manifest", default=None)
    ap.add_argument("--existing", action="store_true",
                    help="only record GGUF (written by another tool) in --manifest")
    ap.add_argument("--config", default=os.path.join(os.path.dirname(__file__), "tiers.toml"))
    args = ap.parse_args()
    with open(args.config, "rb") as f:
        cfg = tomllib.load(f)
    tier = {t["name"]: t for t in cfg["tiers"]}[args.tier]
    done_path = os.path.join(args.out_dir, args.tier, "done.json")
    if not os.path.exists(done_path):
        print(f"export: {args.tier} has not finished training ({done_path} is missing)",
              file=sys.stderr)
        return 2
    with open(done_path) as f:
        done = json.load(f)
    if args.existing:
        if not args.manifest or not os.path.exists(args.gguf):
            print("export: --existing needs --manifest and an existing GGUF", file=sys.stderr)
            return 2
        update_manifest(args.manifest, args.gguf, args.type, done)
        return 0
    if args.type not in ("f32", "f16"):
        print(f"export: writes f32 or f16; make {args.type} with `shoal quantize`",
              file=sys.stderr)
        return 2
    sp = spm.SentencePieceProcessor(model_file=os.path.join(args.corpus_dir, "tokenizer.model"))
    ctx = cfg["train"]["context"]
    mc = model_config(vocab=sp.get_piece_size(), dim=tier["dim"], layers=tier["layers"],
                      heads=tier["heads"], ffn=tier["ffn"], context=ctx)
    model = llama(mc)
    ck = torch.load(os.path.join(args.out_dir, args.tier, "checkpoint.pt"))
    model.load_state_dict(ck["model"])
    sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}

    # Tensors in llama.cpp's names and order.
    tensors = [("token_embd.weight", sd["tok_embd.weight"])]
    for i in range(mc.layers):
        p = f"layers.{i}."
        tensors += [
            (f"blk.{i}.attn_norm.weight", sd[p + "attn_norm.weight"]),
            (f"blk.{i}.attn_q.weight", sd[p + "wq.weight"]),
            (f"blk.{i}.attn_k.weight", sd[p + "wk.weight"]),
            (f"blk.{i}.attn_v.weight", sd[p + "wv.weight"]),
            (f"blk.{i}.attn_output.weight", sd[p + "wo.weight"]),
            (f"blk.{i}.ffn_norm.weight", sd[p + "ffn_norm.weight"]),
            (f"blk.{i}.ffn_gate.weight", sd[p + "w1.weight"]),
            (f"blk.{i}.ffn_up.weight", sd[p + "w3.weight"]),
            (f"blk.{i}.ffn_down.weight", sd[p + "w2.weight"]),
        ]
    tensors += [("output_norm.weight", sd["norm.weight"]), ("output.weight", sd["output.weight"])]

    tokens, scores, types = vocabulary(sp)
    kv = [
        gguf_kv("general.architecture", STRING, "llama"),
        gguf_kv("general.name", STRING, args.tier),
        gguf_kv("general.description", STRING,
                "A Shoal tier trained on Debian package descriptions: given 'package: "
                "synopsis', it writes the package's long description"),
        gguf_kv("general.source.url", STRING,
                "Debian 12 package lists (apt-cache dumpavail) and Translation-en"),
        gguf_kv("general.file_type", U32, FILE_TYPE[args.type]),
        gguf_kv("general.alignment", U32, ALIGN),
        gguf_kv("general.training.tokens", U64, int(done["tokens_seen"])),
        gguf_kv("general.training.validation_loss", F32, float(done["validation_loss"])),
        gguf_kv("general.training.validation_perplexity", F32,
                float(done["validation_perplexity"])),
        gguf_kv("llama.context_length", U32, ctx),
        gguf_kv("llama.embedding_length", U32, mc.dim),
        gguf_kv("llama.block_count", U32, mc.layers),
        gguf_kv("llama.feed_forward_length", U32, mc.ffn),
        gguf_kv("llama.attention.head_count", U32, mc.heads),
        gguf_kv("llama.attention.head_count_kv", U32, mc.heads),
        gguf_kv("llama.attention.layer_norm_rms_epsilon", F32, mc.eps),
        gguf_kv("llama.rope.dimension_count", U32, mc.dim // mc.heads),
        gguf_kv("llama.rope.freq_base", F32, mc.rope_base),
        gguf_kv("llama.vocab_size", U32, mc.vocab),
        gguf_kv("tokenizer.ggml.model", STRING, "llama"),
        gguf_kv("tokenizer.ggml.tokens", ARRAY, tokens, STRING),
        gguf_kv("tokenizer.ggml.scores", ARRAY, scores, F32),
        gguf_kv("tokenizer.ggml.token_type", ARRAY, types, I32),
        gguf_kv("tokenizer.ggml.unknown_token_id", U32, sp.unk_id()),
        gguf_kv("tokenizer.ggml.bos_token_id", U32, sp.bos_id()),
        gguf_kv("tokenizer.ggml.eos_token_id", U32, sp.eos_id()),
        gguf_kv("tokenizer.ggml.add_bos_token", BOOL, True),
        gguf_kv("tokenizer.ggml.add_eos_token", BOOL, False),
        gguf_kv("tokenizer.ggml.add_space_prefix", BOOL, True),
        gguf_kv("tokenizer.chat_template", STRING, CHATML),
    ]

    infos, blobs, offset = [], [], 0
    for name, arr in tensors:
        kind = GGML_F16 if args.type == "f16" and arr.ndim == 2 else GGML_F32
        data = arr.astype("<f2" if kind == GGML_F16 else "<f4").tobytes()
        ne = list(reversed(arr.shape))  # ggml: innermost dimension first
        infos.append(gguf_string(name) + struct.pack("<I", len(ne))
                     + struct.pack(f"<{len(ne)}Q", *ne) + struct.pack("<IQ", kind, offset))
        pad = (-len(data)) % ALIGN
        blobs.append(data + b"\0" * pad)
        offset += len(data) + pad
    header = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kv)) + b"".join(kv) + b"".join(infos)
    header += b"\0" * ((-len(header)) % ALIGN)
    tmp = args.gguf + ".tmp"
    with open(tmp, "wb") as f:
        f.write(header)
        for b in blobs:
            f.write(b)
    os.replace(tmp, args.gguf)
    if args.manifest:
        update_manifest(args.manifest, args.gguf, args.type, done)
    print(f"export: {args.gguf} ({args.type}, {os.path.getsize(args.gguf) / 1e6:.1f} MB, "
          f"{len(tensors)} tensors)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
