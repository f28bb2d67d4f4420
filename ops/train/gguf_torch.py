"""Loads a tier's GGUF file (ops/train/export.py) back into PyTorch.

The reference side of the tests that check Shoal's engine and tokenizer on
the trained models (tests/models/reference.py): PyTorch runs model.py's
llama on the GGUF's own weights, so a fresh clone needs only the committed
GGUFs, not the training checkpoints.

Format: GGUF version 3 as ggml's docs/gguf.md gives it (little-endian
header, metadata key/values, tensor infos, data aligned to
general.alignment). Reads F32 and F16 tensors (upcast to f32); other types
are refused with the tensor's name: quantized files are checked against
the F16 one instead.

Usage (library): meta, tensors = read_gguf(path); model = load_llama(path)
"""
import struct

import numpy as np
import torch

from model import config, llama

# gguf_metadata_value_type: struct format (scalars), or None for string/array.
SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
          10: "<Q", 11: "<q", 12: "<d"}
STRING, ARRAY = 8, 9
GGML_F32, GGML_F16 = 0, 1


class reader:
    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def take(self, fmt: str):
        v = struct.unpack_from(fmt, self.data, self.pos)[0]
        self.pos += struct.calcsize(fmt)
        return v

    def string(self) -> str:
        n = self.take("<Q")
        s = self.data[self.pos:self.pos + n].decode("utf-8")
        self.pos += n
        return s

    def value(self, kind: int):
        if kind == STRING:
            return self.string()
        if kind == ARRAY:
            elem, n = self.take("<I"), self.take("<Q")
            return [self.value(elem) for _ in range(n)]
        if kind not in SCALAR:
            raise ValueError(f"unknown GGUF value type {kind} at byte {self.pos}")
        return self.take(SCALAR[kind])


def read_gguf(path: str):
    """(metadata dict, {name: np.float32 array in PyTorch's [out, in] order})."""
    with open(path, "rb") as f:
        data = f.read()
    r = reader(data)
    if data[:4] != b"GGUF":
        raise ValueError(f"{path}: not a GGUF file")
    r.pos = 4
    version, n_tensors, n_kv = r.take("<I"), r.take("<Q"), r.take("<Q")
    if version != 3:
        raise ValueError(f"{path}: GGUF version {version}, expected 3")
    meta = {}
    for _ in range(n_kv):
        key = r.string()
        meta[key] = r.value(r.take("<I"))
    infos = []
    for _ in range(n_tensors):
        name = r.string()
        ne = [r.take("<Q") for _ in range(r.take("<I"))]
        infos.append((name, ne, r.take("<I"), r.take("<Q")))
    align = meta.get("general.alignment", 32)
    base = (r.pos + align - 1) // align * align
    tensors = {}
    for name, ne, kind, offset in infos:
        if kind not in (GGML_F32, GGML_F16):
            raise ValueError(f"{path}: tensor {name} has ggml type {kind}; only F32 and F16 "
                             "are read (check quantized files against the F16 one)")
        dtype = "<f4" if kind == GGML_F32 else "<f2"
        n = int(np.prod(ne))
        arr = np.frombuffer(data, dtype=dtype, count=n, offset=base + offset)
        tensors[name] = arr.astype(np.float32).reshape(list(reversed(ne)))
    return meta, tensors


def load_llama(path: str) -> llama:
    """model.py's llama with the GGUF's hyper-parameters and weights, in eval mode."""
    meta, t = read_gguf(path)
    if meta.get("general.architecture") != "llama":
        raise ValueError(f"{path}: architecture {meta.get('general.architecture')}, not llama")
    c = config(vocab=len(meta["tokenizer.ggml.tokens"]), dim=meta["llama.embedding_length"],
               layers=meta["llama.block_count"], heads=meta["llama.attention.head_count"],
               ffn=meta["llama.feed_forward_length"], context=meta["llama.context_length"],
               eps=meta["llama.attention.layer_norm_rms_epsilon"],
               rope_base=meta["llama.rope.freq_base"])
    m = llama(c)
    sd = {"tok_embd.weight": t["token_embd.weight"], "norm.weight": t["output_norm.weight"],
          "output.weight": t["output.weight"]}
    names = {"attn_norm": "attn_norm", "attn_q": "wq", "attn_k": "wk", "attn_v": "wv",
             "attn_output": "wo", "ffn_norm": "ffn_norm", "ffn_gate": "w1", "ffn_up": "w3",
             "ffn_down": "w2"}
    for i in range(c.layers):
        for g, p in names.items():
            sd[f"layers.{i}.{p}.weight"] = t[f"blk.{i}.{g}.weight"]
    m.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in sd.items()})
    return m.eval()
