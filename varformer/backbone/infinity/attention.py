"""The two attentions of an Infinity block (official infinity/models/basic.py ``SelfAttention``, ``CrossAttention``),
with the official parameter names, computed with ``F.scaled_dot_product_attention`` (no flash-attn, no explicit
attention matrix).

Self-attention (cosine attention): ``qkv = mat_qkv(x) + (q_bias, 0, v_bias)``; q and k L2-normalised per head, q
times ``exp(min(scale_mul_1H11, ln 100))``, the 2-D RoPE rotation, softmax scale 1. ``mat_qkv`` is called as a
module and its bias added afterwards, so a LoRA wrapper (``varformer.varestorer.lora``) can take its place.

Text cross-attention: queries ``mat_q(x)`` of the image tokens, keys/values ``mat_kv(text) (+ (0, v_bias))`` of
each image's own text rows, scale ``1/sqrt(head_dim)``, no cosine attention. The official varlen kernel
(``flash_attn_varlen_kvpacked_func``, which casts float32 to bf16) is replaced by padded SDPA with a key mask,
computed in float32. ``use_value_bias=False`` drops ``v_bias`` from the keys/values: what the released VARestorer
does after its LoRA injection (docs/varestorer.md, D2).
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from varformer import ops
from varformer.backbone.infinity.rope2d import apply_rope2d
from varformer.runtime import fp32_region


class InfinitySelfAttention(nn.Module):
    def __init__(self, embed_dim: int, num_heads: int):
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        self.num_heads, self.head_dim = num_heads, embed_dim // num_heads
        self.scale_mul_1H11 = nn.Parameter(torch.full((1, num_heads, 1, 1), math.log(4.0)))
        self.max_scale_mul = math.log(100.0)
        self.mat_qkv = ops.Linear(embed_dim, 3 * embed_dim, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(embed_dim))
        self.v_bias = nn.Parameter(torch.zeros(embed_dim))
        self.proj = ops.Linear(embed_dim, embed_dim)

    def qkv_bias(self) -> torch.Tensor:
        return torch.cat((self.q_bias, torch.zeros_like(self.q_bias), self.v_bias))

    def project(self, x_BLC: torch.Tensor, rope: Optional[Tuple[torch.Tensor, torch.Tensor]]):
        """q, k (float32, normalised, scaled, rotated) and v, each (B, H, L, head_dim)."""
        qkv = self.mat_qkv(x_BLC)
        qkv = qkv + self.qkv_bias().to(qkv.dtype)
        q, k, v = rearrange(qkv, "b l (three h d) -> three b h l d", three=3, h=self.num_heads).unbind(0)
        with fp32_region(x_BLC.device):
            # clamp before exp: no gradient flows to a log-scale above ln 100
            scale_mul = self.scale_mul_1H11.float().clamp_max(self.max_scale_mul).exp()
            q = F.normalize(q.float(), dim=-1).mul(scale_mul)
            k = F.normalize(k.float(), dim=-1)
            if rope is not None:
                L = x_BLC.shape[1]
                q, k = apply_rope2d(q, k, rope[0][:L], rope[1][:L])
        return q, k, v

    def forward(self, x_BLC: torch.Tensor, rope: Optional[Tuple[torch.Tensor, torch.Tensor]] = None,
                attn_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``rope``: the (cos, sin) table, its first L rows are used; ``attn_mask``: a boolean (L, L) mask (True:
        may attend) or None for full attention."""
        q, k, v = self.project(x_BLC, rope)
        # the official code feeds float32 q/k with the autocast dtype's v; SDPA takes one dtype
        out = F.scaled_dot_product_attention(q.to(v.dtype), k.to(v.dtype), v, attn_mask=attn_mask, scale=1.0)
        return self.proj(rearrange(out, "b h l d -> b l (h d)"))


def masked_attention_fp32(q_BHLd: torch.Tensor, k_BHTd: torch.Tensor, v_BHTd: torch.Tensor,
                          key_mask_BT: torch.Tensor, scale: float) -> torch.Tensor:
    """Attention of q over each row's valid keys (``key_mask_BT`` True), in float32 -> (B, L, H * d) float32."""
    with fp32_region(q_BHLd.device):
        out = F.scaled_dot_product_attention(q_BHLd.float(), k_BHTd.float(), v_BHTd.float(),
                                             attn_mask=key_mask_BT[:, None, None, :], scale=scale)
    return rearrange(out, "b h l d -> b l (h d)")


class TextCrossAttention(nn.Module):
    """Image tokens attend to their image's text tokens (padded to a common length, masked)."""

    def __init__(self, embed_dim: int, kv_dim: int, num_heads: int):
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        self.num_heads, self.head_dim = num_heads, embed_dim // num_heads
        self.scale = 1 / math.sqrt(self.head_dim)
        self.mat_q = ops.Linear(embed_dim, embed_dim)
        self.mat_kv = ops.Linear(kv_dim, 2 * embed_dim, bias=False)
        self.v_bias = nn.Parameter(torch.zeros(embed_dim))
        self.proj = ops.Linear(embed_dim, embed_dim)
        self.use_value_bias = True

    def keys_values(self, text_BTD: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        kv = self.mat_kv(text_BTD)
        if self.use_value_bias:
            kv = kv + torch.cat((torch.zeros_like(self.v_bias), self.v_bias)).to(kv.dtype)
        k, v = rearrange(kv, "b t (two h d) -> two b h t d", two=2, h=self.num_heads).unbind(0)
        return k, v

    def forward(self, x_BLC: torch.Tensor, text_BTD: torch.Tensor, key_mask_BT: torch.Tensor) -> torch.Tensor:
        q = rearrange(self.mat_q(x_BLC), "b l (h d) -> b h l d", h=self.num_heads)
        k, v = self.keys_values(text_BTD)
        out = masked_attention_fp32(q, k, v, key_mask_BT, self.scale)
        return self.proj(out.to(q.dtype))

    def extra_repr(self) -> str:
        return f"use_value_bias={self.use_value_bias}"
