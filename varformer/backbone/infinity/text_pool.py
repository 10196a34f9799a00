"""Infinity's text input: the per-image T5 features padded into one batch, the RMS norm over them and the attentive
pool that turns them into the start token / AdaLN condition (official infinity/models/infinity.py
``TextAttentivePool``, basic.py ``FastRMSNorm`` and ``CrossAttention(for_attn_pool=True)``).

The official code packs the texts of a batch into one (sum L_i, C) tensor with cumulative lengths for a varlen
flash kernel; here they are padded to (B, max L_i, C) with a key mask, so each image sees only its own rows.

    text = PaddedText.from_list([feat_0, feat_1])    # feat_i: (L_i, C) T5 last_hidden_state rows, L_i >= 1
    cond_BD = TextAttentivePool(C, D)(text_norm(text.features_BTC), text.mask_BT)
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Sequence

import torch
import torch.nn as nn
from einops import rearrange

from varformer import ops
from varformer.backbone.infinity.attention import masked_attention_fp32


@dataclass
class PaddedText:
    features_BTC: torch.Tensor     # (B, T, C) float32, rows past an image's length are zero
    mask_BT: torch.Tensor          # (B, T) bool, True for an image's own rows
    lengths: List[int]             # L_i

    @classmethod
    def from_list(cls, features: Sequence[torch.Tensor], device=None) -> "PaddedText":
        if not features:
            raise ValueError("no text features given (one (L_i, C) tensor per image)")
        widths = {tuple(f.shape[1:]) for f in features}
        if any(f.ndim != 2 or f.shape[0] < 1 for f in features) or len(widths) != 1:
            shapes = [tuple(f.shape) for f in features]
            raise ValueError(f"text features must be (L_i, C) tensors with L_i >= 1 and one C, got {shapes}")
        device = features[0].device if device is None else device
        lengths = [int(f.shape[0]) for f in features]
        T, C = max(lengths), features[0].shape[1]
        padded = torch.zeros(len(features), T, C, device=device)
        mask = torch.zeros(len(features), T, dtype=torch.bool, device=device)
        for i, f in enumerate(features):
            padded[i, :lengths[i]] = f.to(device=device, dtype=torch.float32)
            mask[i, :lengths[i]] = True
        return cls(padded, mask, lengths)

    def with_rows(self, features_BTC: torch.Tensor) -> "PaddedText":
        return PaddedText(features_BTC, self.mask_BT, self.lengths)


class FastRMSNorm(nn.Module):
    """``x * rsqrt(mean(x^2) + eps) * weight`` in float32, returned in x's dtype (key ``weight``)."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True).add_(self.eps)) * self.weight).to(x.dtype)


class PoolAttention(nn.Module):
    """One learned query per head attends to the text rows (official ``CrossAttention(for_attn_pool=True)``): keys
    ``mat_q`` (1, H, head_dim), ``mat_kv``, ``v_bias``, ``proj``. Keys/values carry the bias ``(0, v_bias)``."""

    def __init__(self, embed_dim: int, kv_dim: int, num_heads: int):
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"pool width {embed_dim} is not divisible by its {num_heads} heads")
        self.num_heads, self.head_dim = num_heads, embed_dim // num_heads
        self.scale = 1 / math.sqrt(self.head_dim)
        self.mat_q = nn.Parameter(torch.randn(1, num_heads, self.head_dim) * math.sqrt(1 / embed_dim / 3))
        self.mat_kv = ops.Linear(kv_dim, 2 * embed_dim, bias=False)
        self.v_bias = nn.Parameter(torch.zeros(embed_dim))
        self.proj = ops.Linear(embed_dim, embed_dim)

    def forward(self, text_BTC: torch.Tensor, mask_BT: torch.Tensor) -> torch.Tensor:
        kv = self.mat_kv(text_BTC)
        kv = kv + torch.cat((torch.zeros_like(self.v_bias), self.v_bias)).to(kv.dtype)
        k, v = rearrange(kv, "b t (two h d) -> two b h t d", two=2, h=self.num_heads).unbind(0)
        q = self.mat_q[:, :, None, :].expand(text_BTC.shape[0], -1, -1, -1)        # (B, H, 1, head_dim)
        out = masked_attention_fp32(q, k, v, mask_BT, self.scale)                     # (B, 1, D)
        return self.proj(out.to(kv.dtype))[:, 0]


class TextAttentivePool(nn.Module):
    """Pooled text (B, D): the start token and the AdaLN condition. Heads: ``text_channels // 128`` (head width
    128, ``D // heads`` per head; the official rule for D <= 4096)."""

    def __init__(self, text_channels: int, embed_dim: int):
        super().__init__()
        if embed_dim > 4096:
            raise ValueError("TextAttentivePool: widths above 4096 (64-wide pool heads) are not supported")
        if text_channels % 128:
            raise ValueError(f"text_channels must be a multiple of 128 (pool heads of 128), got {text_channels}")
        self.ca = PoolAttention(embed_dim, text_channels, text_channels // 128)

    def forward(self, text_BTC: torch.Tensor, mask_BT: torch.Tensor) -> torch.Tensor:
        return self.ca(text_BTC, mask_BT)
