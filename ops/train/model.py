"""The tiers' llama-architecture decoder in PyTorch 1.13 (training only).

The same computation as Shoal's engine (engine/model.cpp, llama arch) and
llama.cpp for `general.architecture = llama`: token embedding; per layer
x += Wo·attn(RoPE(Wq·n(x)), RoPE(Wk·n(x)), Wv·n(x)) with causal softmax
attention, then x += W2·(silu(W1·n(x)) ⊙ W3·n(x)); RMSNorm n(x) = x /
sqrt(mean(x²) + eps) ⊙ g (Zhang & Sennrich 2019); a final RMSNorm and the
output projection. RoPE rotates consecutive pairs (x[2i], x[2i+1]) of each
head's dimensions by position · base^(-2i/head_dim) (Su et al. 2021): the
pairing llama.cpp and Shoal apply to GGUF llama weights (Hugging Face's
rotate-half pairing is what llama.cpp's converter permutes q and k away
from), so the trained q and k are exported as they are. No biases.
PyTorch 1.13 lacks nn.RMSNorm and F.scaled_dot_product_attention, so both
are written here.

Shapes: tokens [batch, time] int64 -> logits [batch, time, vocab] f32.
"""
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class config:
    vocab: int
    dim: int
    layers: int
    heads: int
    ffn: int
    context: int
    eps: float = 1e-5
    rope_base: float = 10000.0


class rms_norm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rope_tables(head_dim: int, context: int, base: float):
    """cos and sin [context, head_dim / 2] of the pair rotations."""
    inv = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    ang = torch.arange(context, dtype=torch.float32)[:, None] * inv[None, :]
    return torch.cos(ang), torch.sin(ang)


def apply_rope(x, cos, sin):
    """x [batch, heads, time, head_dim]: rotates pairs (x[2i], x[2i+1])."""
    t = x.shape[2]
    x2 = x.reshape(*x.shape[:-1], -1, 2)
    a, b = x2[..., 0], x2[..., 1]
    c, s = cos[:t], sin[:t]
    return torch.stack((a * c - b * s, a * s + b * c), dim=-1).reshape(x.shape)


class block(nn.Module):
    def __init__(self, c: config):
        super().__init__()
        self.heads = c.heads
        self.head_dim = c.dim // c.heads
        self.attn_norm = rms_norm(c.dim, c.eps)
        self.wq = nn.Linear(c.dim, c.dim, bias=False)
        self.wk = nn.Linear(c.dim, c.dim, bias=False)
        self.wv = nn.Linear(c.dim, c.dim, bias=False)
        self.wo = nn.Linear(c.dim, c.dim, bias=False)
        self.ffn_norm = rms_norm(c.dim, c.eps)
        self.w1 = nn.Linear(c.dim, c.ffn, bias=False)  # gate
        self.w3 = nn.Linear(c.dim, c.ffn, bias=False)  # up
        self.w2 = nn.Linear(c.ffn, c.dim, bias=False)  # down

    def forward(self, x, cos, sin, mask):
        b, t, d = x.shape
        h = self.attn_norm(x)
        q = self.wq(h).view(b, t, self.heads, self.head_dim).transpose(1, 2)
        k = self.wk(h).view(b, t, self.heads, self.head_dim).transpose(1, 2)
        v = self.wv(h).view(b, t, self.heads, self.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        att = (q @ k.transpose(-2, -1)) / math.sqrt(self.head_dim)
        att = att.masked_fill(mask[:t, :t], float("-inf")).softmax(-1)
        y = (att @ v).transpose(1, 2).reshape(b, t, d)
        x = x + self.wo(y)
        h = self.ffn_norm(x)
        return x + self.w2(F.silu(self.w1(h)) * self.w3(h))


class llama(nn.Module):
    def __init__(self, c: config):
        super().__init__()
        self.c = c
        self.tok_embd = nn.Embedding(c.vocab, c.dim)
        self.layers = nn.ModuleList(block(c) for _ in range(c.layers))
        self.norm = rms_norm(c.dim, c.eps)
        self.output = nn.Linear(c.dim, c.vocab, bias=False)
        cos, sin = rope_tables(c.dim // c.heads, c.context, c.rope_base)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)
        mask = torch.triu(torch.ones(c.context, c.context, dtype=torch.bool), diagonal=1)
        self.register_buffer("mask", mask, persistent=False)
        self.apply(self._init)
        # GPT-2 style: residual projections scaled by 1/sqrt(2·layers).
        for name, p in self.named_parameters():
            if name.endswith("wo.weight") or name.endswith("w2.weight"):
                nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * c.layers))

    @staticmethod
    def _init(m):
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, 0.0, 0.02)

    def forward(self, tokens):
        x = self.tok_embd(tokens)
        for layer in self.layers:
            x = layer(x, self.cos, self.sin, self.mask)
        return self.output(self.norm(x))

    def non_embedding_parameters(self) -> int:
        return sum(p.numel() for n, p in self.named_parameters()
                   if not n.startswith("tok_embd") and not n.startswith("output"))
