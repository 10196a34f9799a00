"""Transformer blocks of VAR: AdaLN-conditioned self-attention blocks and the AdaLN head norm.

Public call signatures (a caller may iterate `var.blocks` itself, e.g. to inject cross-attention after a block):

    x_BLC = block(x_BLC, cond_BD, attn_bias)   # cond_BD: `var.block_condition(class_emb)`; attn_bias: additive
                                               # (1, 1, L, L) mask, or None when the KV cache gives causality
    block.attn.kv_caching(True)                # start an empty KV cache (each call appends this call's k, v)
    block.attn.kv_caching(False)               # stop caching and free the cache

Attention runs through `torch.nn.functional.scaled_dot_product_attention`. With `attn_l2_norm=True` (all official
models) q and k are L2-normalised per head and q is scaled by `exp(min(scale_mul_1H11, ln 100))`; the softmax
scale is then 1. The cache stores normalised keys.

Under autocast the linear layers run in the autocast dtype while the residual stream stays in the input dtype
(float32 when the embeddings are float32), which keeps the bf16 error from accumulating over depth.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from varformer import ops


class DropPath(nn.Module):
    """Stochastic depth: drop the whole residual branch per sample in training, rescaled by 1/keep."""

    def __init__(self, drop_prob: float = 0.0):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask.div_(keep)

    def extra_repr(self) -> str:
        return f'drop_prob={self.drop_prob}'


class FFN(nn.Module):
    """fc1 -> GELU (tanh approximation) -> fc2."""

    def __init__(self, in_features: int, hidden_features: int):
        super().__init__()
        self.fc1 = ops.Linear(in_features, hidden_features, activation='gelu_tanh')
        self.fc2 = ops.Linear(hidden_features, in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.fc1(x))


class SelfAttention(nn.Module):
    """Multi-head self-attention with a bias-free qkv matrix plus (q_bias, zero k bias, v_bias), optional L2-normed
    q/k with a learned clamped per-head scale, and an optional KV cache for next-scale sampling."""

    def __init__(self, embed_dim: int, num_heads: int, attn_l2_norm: bool = True):
        super().__init__()
        if embed_dim % num_heads != 0:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        self.num_heads, self.head_dim = num_heads, embed_dim // num_heads
        self.attn_l2_norm = attn_l2_norm
        if attn_l2_norm:
            self.scale = 1.0
            self.scale_mul_1H11 = nn.Parameter(torch.full((1, num_heads, 1, 1), math.log(4.0)))
            self.max_scale_mul = math.log(100.0)
        else:
            self.scale = 0.25 / math.sqrt(self.head_dim)
        self.mat_qkv = nn.Linear(embed_dim, 3 * embed_dim, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(embed_dim))
        self.v_bias = nn.Parameter(torch.zeros(embed_dim))
        self.register_buffer('zero_k_bias', torch.zeros(embed_dim))
        self.proj = ops.Linear(embed_dim, embed_dim)
        self.caching = False
        self.cached_k: torch.Tensor | None = None   # (B, H, L_cached, head_dim)
        self.cached_v: torch.Tensor | None = None

    def kv_caching(self, enable: bool) -> None:
        """Turn the KV cache on (empty) or off (freed)."""
        self.caching = enable
        self.cached_k = self.cached_v = None

    def project_qkv(self, x_BLC: torch.Tensor):
        """(B, L, C) -> q, k, v, each (B, H, L, head_dim); q and k L2-normalised (q times the clamped per-head
        scale) when ``attn_l2_norm``."""
        bias = torch.cat((self.q_bias, self.zero_k_bias, self.v_bias))
        qkv = ops.linear(x_BLC, self.mat_qkv.weight, bias)
        q, k, v = rearrange(qkv, "b l (three h d) -> three b h l d", three=3, h=self.num_heads).unbind(0)
        if self.attn_l2_norm:
            # clamp before exp: no gradient flows to a log-scale above ln 100
            scale_mul = self.scale_mul_1H11.clamp_max(self.max_scale_mul).exp()
            q = F.normalize(q, dim=-1).mul(scale_mul.to(q.dtype))
            k = F.normalize(k, dim=-1)
        return q, k, v

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
               attn_bias: torch.Tensor | None) -> torch.Tensor:
        """Attention of q over k, v (appended to the KV cache when caching) and the output projection -> (B, L, C)."""
        if self.caching:
            if self.cached_k is None:
                self.cached_k, self.cached_v = k, v
            else:
                k = self.cached_k = torch.cat((self.cached_k, k), dim=2)
                v = self.cached_v = torch.cat((self.cached_v, v), dim=2)
        if attn_bias is not None:
            attn_bias = attn_bias.to(q.dtype)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_bias, scale=self.scale)
        return self.proj(rearrange(out, "b h l d -> b l (h d)"))

    def forward(self, x_BLC: torch.Tensor, attn_bias: torch.Tensor | None) -> torch.Tensor:
        return self.attend(*self.project_qkv(x_BLC), attn_bias)


class AdaLNSelfAttn(nn.Module):
    """x += gamma1 * Attn(LN(x)(1+scale1)+shift1); x += gamma2 * FFN(LN(x)(1+scale2)+shift2).

    The six modulation vectors come from `ada_lin(cond_BD)` (per-block AdaLN; keys `ada_lin.1.*`) or, with
    `shared_aln`, from the model-level shared projection plus this block's `ada_gss`."""

    def __init__(self, block_idx: int, embed_dim: int, cond_dim: int, num_heads: int, mlp_ratio: float = 4.0,
                 drop_path: float = 0.0, attn_l2_norm: bool = True, shared_aln: bool = False,
                 norm_eps: float = 1e-6):
        super().__init__()
        self.block_idx, self.C, self.shared_aln = block_idx, embed_dim, shared_aln
        self.attn = SelfAttention(embed_dim, num_heads, attn_l2_norm=attn_l2_norm)
        self.ffn = FFN(embed_dim, round(embed_dim * mlp_ratio))
        self.ln_wo_grad = nn.LayerNorm(embed_dim, eps=norm_eps, elementwise_affine=False)
        self.drop_path = DropPath(drop_path)
        if shared_aln:
            self.ada_gss = nn.Parameter(torch.randn(1, 1, 6, embed_dim) / embed_dim ** 0.5)
        else:
            self.ada_lin = nn.Sequential(nn.SiLU(inplace=False), ops.Linear(cond_dim, 6 * embed_dim))

    def modulation(self, cond_BD: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(gamma1, gamma2, scale1, scale2, shift1, shift2), each (B, 1, C)."""
        if self.shared_aln:
            return (self.ada_gss + cond_BD).unbind(2)                     # cond_BD: (B, 1, 6, C)
        return self.ada_lin(cond_BD).view(-1, 1, 6, self.C).unbind(2)

    def forward(self, x_BLC: torch.Tensor, cond_BD: torch.Tensor | None, attn_bias: torch.Tensor | None,
                modulation: tuple[torch.Tensor, ...] | None = None) -> torch.Tensor:
        """``modulation``: ``self.modulation(cond_BD)`` computed by the caller (then ``cond_BD`` is unused): a
        next-scale loop whose condition does not change computes it once per block instead of once per scale
        (the same numbers, a tenth of the reads of ``ada_lin``'s weights)."""
        if modulation is None:
            modulation = self.modulation(cond_BD)
        gamma1, gamma2, scale1, scale2, shift1, shift2 = modulation
        h = self.ln_wo_grad(x_BLC).mul(scale1.add(1)).add_(shift1)
        x_BLC = x_BLC + self.drop_path(self.attn(h, attn_bias=attn_bias).mul_(gamma1))
        h = self.ln_wo_grad(x_BLC).mul(scale2.add(1)).add_(shift2)
        x_BLC = x_BLC + self.drop_path(self.ffn(h).mul(gamma2))
        return x_BLC

    def extra_repr(self) -> str:
        return f'block_idx={self.block_idx}, shared_aln={self.shared_aln}'


class AdaLNBeforeHead(nn.Module):
    """Head norm: LN(x) * (1 + scale) + shift with (scale, shift) = `ada_lin(cond_BD)` (keys `ada_lin.1.*`)."""

    def __init__(self, embed_dim: int, cond_dim: int, norm_eps: float = 1e-6):
        super().__init__()
        self.C = embed_dim
        self.ln_wo_grad = nn.LayerNorm(embed_dim, eps=norm_eps, elementwise_affine=False)
        self.ada_lin = nn.Sequential(nn.SiLU(inplace=False), ops.Linear(cond_dim, 2 * embed_dim))

    def forward(self, x_BLC: torch.Tensor, cond_BD: torch.Tensor) -> torch.Tensor:
        scale, shift = self.ada_lin(cond_BD).view(-1, 1, 2, self.C).unbind(2)
        return self.ln_wo_grad(x_BLC).mul(scale.add(1)).add_(shift)
