"""Transformer blocks without AdaLN, with 2-D RoPE and a cross-attention after the MLP: RestoreVAR's VAR block
(official models/basic_var.py, whose class keeps the name ``AdaLNSelfAttn`` although its docstring says "No AdaLN
is used"). The AdaLN blocks of ``transformer_blocks`` are untouched; these reuse their attention, MLP and
drop-path modules, so the state-dict keys are the official ones.

    block = RoPESelfCrossBlock(embed_dim=1024, num_heads=16, drop_path=0.0)
    k, v = block.cross_attn.keys_values(cond_BNC, cross_table)       # once per image: the condition's keys/values
    x_BLC = block(x_BLC, attn_bias, rope_table, k, v)                # attn_bias None when the KV cache is on

Block (``LN`` = one affine-free LayerNorm, eps 1e-6, used twice; ``DP`` = drop path)::

    x = x + DP(SelfAttn(LN(x)))          # L2-normed q/k, learned clamped scale, RoPE on q and k, KV cache
    x = x + DP(FFN(LN(x)))               # fc1 -> GELU(tanh) -> fc2
    x = x + DP(CrossAttn(x, cond))       # its own affine LayerNorms (eps 1e-5), RoPE, zero-init scalar gain

RoPE is applied after the L2 normalisation and before the KV cache, so the cache holds rotated keys.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from varformer import ops
from varformer.backbone.rope import apply_rope
from varformer.backbone.transformer_blocks import FFN, DropPath, SelfAttention


class RoPESelfAttention(SelfAttention):
    """VAR's self-attention (same parameters and cache) with 2-D RoPE on the normalised q and k."""

    def __init__(self, embed_dim: int, num_heads: int):
        super().__init__(embed_dim, num_heads, attn_l2_norm=True)

    def forward(self, x_BLC: torch.Tensor, attn_bias: torch.Tensor | None,
                rope_Lp: torch.Tensor | None = None) -> torch.Tensor:
        if rope_Lp is None:
            raise TypeError("RoPESelfAttention needs the RoPE table rows of its tokens")
        q, k, v = self.project_qkv(x_BLC)                               # L2-normalised q (scaled) and k
        return self.attend(apply_rope(q, rope_Lp), apply_rope(k, rope_Lp), v, attn_bias)


class RoPECrossAttention(nn.Module):
    """Queries from the residual stream, keys/values from a condition sequence; L2-normed q/k with a learned
    clamped per-head scale (softmax scale 1), RoPE on q (its tokens' rows) and k (the condition grid), no mask,
    output ``gain * out_proj(...)`` with a scalar gain initialised to 0 (official ``CrossAttention`` of
    models/basic_var.py)."""

    def __init__(self, embed_dim: int, num_heads: int):
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        self.num_heads, self.head_dim = num_heads, embed_dim // num_heads
        self.scale_mul_1H11 = nn.Parameter(torch.full((1, num_heads, 1, 1), math.log(4.0)))
        self.max_scale_mul = math.log(100.0)
        self.q_proj = ops.Linear(embed_dim, embed_dim, bias=False)
        self.kv_proj = ops.Linear(embed_dim, 2 * embed_dim, bias=False)   # first half keys, second half values
        self.out_proj = ops.Linear(embed_dim, embed_dim)
        self.norm_q = nn.LayerNorm(embed_dim)                              # PyTorch default eps 1e-5, affine
        self.norm_kv = nn.LayerNorm(embed_dim)
        self.gain = nn.Parameter(torch.tensor(0.0))

    def _heads(self, t_BLC: torch.Tensor) -> torch.Tensor:
        B, L, _ = t_BLC.shape
        return t_BLC.view(B, L, self.num_heads, self.head_dim).transpose(1, 2)   # '(h d)': head-major channels

    def keys_values(self, cond_BNC: torch.Tensor, rope_Np: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The condition's normalised, rotated keys and its values, (B, H, N, head_dim) each. They depend on the
        condition only, so one image computes them once for all scales (the official code recomputes them at every
        scale: the same numbers)."""
        k, v = self.kv_proj(self.norm_kv(cond_BNC)).chunk(2, dim=-1)
        return apply_rope(F.normalize(self._heads(k), dim=-1), rope_Np), self._heads(v)

    def forward(self, x_BLC: torch.Tensor, k_BHNd: torch.Tensor, v_BHNd: torch.Tensor,
                rope_Lp: torch.Tensor) -> torch.Tensor:
        B, L, C = x_BLC.shape
        scale_mul = self.scale_mul_1H11.clamp_max(self.max_scale_mul).exp()
        q = F.normalize(self._heads(self.q_proj(self.norm_q(x_BLC))), dim=-1)
        q = apply_rope(q.mul(scale_mul.to(q.dtype)), rope_Lp)
        out = F.scaled_dot_product_attention(q, k_BHNd.to(q.dtype), v_BHNd.to(q.dtype), scale=1.0)
        return self.gain * self.out_proj(out.transpose(1, 2).reshape(B, L, C))


class RoPESelfCrossBlock(nn.Module):
    """x += DP(SA(LN(x))); x += DP(FFN(LN(x))); x += DP(CA(x, cond)) -- no gates, no scale/shift."""

    def __init__(self, embed_dim: int, num_heads: int, mlp_ratio: float = 4.0, drop_path: float = 0.0,
                 norm_eps: float = 1e-6):
        super().__init__()
        self.attn = RoPESelfAttention(embed_dim, num_heads)
        self.ffn = FFN(embed_dim, round(embed_dim * mlp_ratio))
        self.ln_wo_grad = nn.LayerNorm(embed_dim, eps=norm_eps, elementwise_affine=False)
        self.cross_attn = RoPECrossAttention(embed_dim, num_heads)
        self.drop_path = DropPath(drop_path)

    def forward(self, x_BLC: torch.Tensor, attn_bias: torch.Tensor | None, rope_Lp: torch.Tensor,
                k_BHNd: torch.Tensor, v_BHNd: torch.Tensor) -> torch.Tensor:
        x_BLC = x_BLC + self.drop_path(self.attn(self.ln_wo_grad(x_BLC), attn_bias, rope_Lp))
        x_BLC = x_BLC + self.drop_path(self.ffn(self.ln_wo_grad(x_BLC)))
        return x_BLC + self.drop_path(self.cross_attn(x_BLC, k_BHNd, v_BHNd, rope_Lp))
