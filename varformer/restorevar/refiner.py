"""RestoreVAR's latent refiner: a small transformer that corrects the sampled discrete latent ``f_hat`` towards the
clean continuous latent, attending to the VAR's last-block hidden states (official models/vae_refiner_rope.py).

    r = LatentRefiner(num_tokens=1024, cond_tokens=2240, in_dim=32, cond_dim=1024, dim=384, depth=12, heads=6,
                      mlp_dim=768)
    out_BNc = r(f_BNc, hidden_BLC)            # f + correction, (B, 1024, 32)

Forward: ``h = proj_in(LN(f)) + pos_embedding``; ``m = proj_in_cond(LN(z)) + pos_embedding_cond``; per layer
``h += SelfAttn(h)``, ``h += MLP(h)``, ``h += CrossAttn(h, m)`` (pre-norm, head dim 64, softmax scale 1/8, exact
GELU); ``out = f + proj_out(LN(h))``. All LayerNorms are PyTorch's default (affine, eps 1e-5). Positions enter only
at the input (learned). The official module hard-codes the VAR width (1024) and sequence length (2240), so only d16
at 512 px can run; here they follow the VAR it refines. Module names give the official keys
(``transformer.layers.{j}.{0,1,2}.*``).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def _split_heads(t_BLC: torch.Tensor, heads: int) -> torch.Tensor:
    B, L, C = t_BLC.shape
    return t_BLC.view(B, L, heads, C // heads).transpose(1, 2)


def _merge_heads(t_BHLd: torch.Tensor) -> torch.Tensor:
    B, H, L, d = t_BHLd.shape
    return t_BHLd.transpose(1, 2).reshape(B, L, H * d)


class RefinerSelfAttention(nn.Module):
    """LN -> to_qkv (no bias; chunks q, k, v) -> softmax(q k^T / sqrt(d)) v -> to_out."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm = nn.LayerNorm(dim)
        self.to_qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.to_out = nn.Sequential(nn.Linear(dim, dim))      # key "to_out.0" (official: Linear then Dropout(0))

    def forward(self, h_BNC: torch.Tensor) -> torch.Tensor:
        q, k, v = (_split_heads(t, self.heads) for t in self.to_qkv(self.norm(h_BNC)).chunk(3, dim=-1))
        return self.to_out(_merge_heads(F.scaled_dot_product_attention(q, k, v)))


class RefinerFeedForward(nn.Module):
    """LN -> Linear -> GELU (exact) -> Linear; keys net.0, net.1, net.4 (indices 2, 3: GELU and a zero dropout)."""

    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, hidden_dim), nn.GELU(), nn.Identity(),
                                 nn.Linear(hidden_dim, dim))

    def forward(self, h_BNC: torch.Tensor) -> torch.Tensor:
        return self.net(h_BNC)


class RefinerCrossAttention(nn.Module):
    """norm_q(h) -> to_q; norm_kv(m) -> to_kv (first half keys); softmax(q k^T / sqrt(d)) v -> to_out."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm_q = nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_kv = nn.Linear(dim, 2 * dim, bias=False)
        self.to_out = nn.Linear(dim, dim)

    def forward(self, h_BNC: torch.Tensor, m_BLC: torch.Tensor) -> torch.Tensor:
        k, v = (_split_heads(t, self.heads) for t in self.to_kv(self.norm_kv(m_BLC)).chunk(2, dim=-1))
        q = _split_heads(self.to_q(self.norm_q(h_BNC)), self.heads)
        return self.to_out(_merge_heads(F.scaled_dot_product_attention(q, k, v)))


class RefinerTransformer(nn.Module):
    def __init__(self, dim: int, depth: int, heads: int, mlp_dim: int):
        super().__init__()
        self.layers = nn.ModuleList([
            nn.ModuleList([RefinerSelfAttention(dim, heads), RefinerFeedForward(dim, mlp_dim),
                           RefinerCrossAttention(dim, heads)]) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)

    def forward(self, h_BNC: torch.Tensor, m_BLC: torch.Tensor) -> torch.Tensor:
        for attn, ff, cross in self.layers:
            h_BNC = attn(h_BNC) + h_BNC
            h_BNC = ff(h_BNC) + h_BNC
            h_BNC = cross(h_BNC, m_BLC) + h_BNC
        return self.norm(h_BNC)


class LatentRefiner(nn.Module):
    def __init__(self, num_tokens: int = 1024, cond_tokens: int = 2240, in_dim: int = 32, cond_dim: int = 1024,
                 dim: int = 384, depth: int = 12, heads: int = 6, mlp_dim: int = 768):
        super().__init__()
        self.num_tokens, self.cond_tokens = num_tokens, cond_tokens
        self.proj_in = nn.Linear(in_dim, dim, bias=False)
        self.proj_in_cond = nn.Linear(cond_dim, dim, bias=False)
        self.pos_embedding = nn.Parameter(torch.zeros(1, num_tokens, dim))
        self.pos_embedding_cond = nn.Parameter(torch.zeros(1, cond_tokens, dim))
        nn.init.trunc_normal_(self.pos_embedding, std=0.02)
        nn.init.trunc_normal_(self.pos_embedding_cond, std=0.02)
        self.transformer = RefinerTransformer(dim, depth, heads, mlp_dim)
        self.proj_out = nn.Linear(dim, in_dim, bias=False)
        self.norm_in = nn.LayerNorm(in_dim)
        self.norm_in_cond = nn.LayerNorm(cond_dim)

    def forward(self, f_BNc: torch.Tensor, hidden_BLC: torch.Tensor) -> torch.Tensor:
        if f_BNc.shape[1] != self.num_tokens or hidden_BLC.shape[1] != self.cond_tokens:
            raise ValueError(f"the refiner takes ({self.num_tokens}) latent and ({self.cond_tokens}) hidden tokens, "
                             f"got {f_BNc.shape[1]} and {hidden_BLC.shape[1]}")
        h = self.proj_in(self.norm_in(f_BNc)) + self.pos_embedding
        m = self.proj_in_cond(self.norm_in_cond(hidden_BLC)) + self.pos_embedding_cond
        return self.proj_out(self.transformer(h, m)) + f_BNc

    @torch.no_grad()
    def init_weights(self, std: float) -> None:
        """Official stage 2: VAR ``init_weights`` also reaches the refiner (it is a sub-module of that VAR):
        truncated-normal Linear weights with the VAR's std sqrt(1/(3C)), zero biases, LayerNorms 1/0; the position
        embeddings keep their constructor init (truncated normal, std 0.02)."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=std)
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, nn.LayerNorm):
                m.weight.fill_(1.0)
                m.bias.zero_()

    @staticmethod
    def var_init_std(embed_dim: int) -> float:
        return math.sqrt(1 / embed_dim / 3)
