"""Infinity's transformer block (official infinity/models/basic.py ``CrossAttnBlock`` with ``shared_aln=True``,
``fused_norm=True``, ``cross_attn_layer_scale=-1``) and the chunk container that gives the official key layout
``block_chunks.{i}.module.{j}.*``.

    g1, g2, s1, s2, t1, t2 = ada_gss + shared_gss          # (B, 1, 6, C): the model's SharedAdaLin + this block's
    x = x + g1 * SA(LN(x) * (1 + s1) + t1)                  # cosine self-attention with 2-D RoPE
    x = x + CA(ca_norm(x), text)                            # text cross-attention (ca_gamma = 1)
    x = x + g2 * FFN(LN(x) * (1 + s2) + t2)                 # fc1 -> GELU(tanh) -> fc2

The modulation, the adaptive norms and the residual stream are float32; the attention and MLP linears follow the
caller's autocast (the release runs them in bf16). Drop path is active in training only.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from varformer.backbone.infinity.attention import InfinitySelfAttention, TextCrossAttention
from varformer.backbone.transformer_blocks import FFN, DropPath
from varformer.runtime import fp32_region


def ffn_hidden(embed_dim: int, mlp_ratio: float = 4.0) -> int:
    """The official FFN width: ``round(C * mlp_ratio / 256) * 256``."""
    return round(embed_dim * mlp_ratio / 256) * 256


def ada_layer_norm(x_BLC: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, eps: float) -> torch.Tensor:
    """``LN(x) * (1 + scale) + shift``, LayerNorm without affine (official ``fused_ada_layer_norm``)."""
    with fp32_region(x_BLC.device):
        h = F.layer_norm(x_BLC.float(), (x_BLC.shape[-1],), eps=eps)
        return h.mul(scale.add(1)).add_(shift).to(x_BLC.dtype)


class InfinityBlock(nn.Module):
    def __init__(self, embed_dim: int, num_heads: int, kv_dim: int, mlp_ratio: float = 4.0,
                 drop_path: float = 0.0, norm_eps: float = 1e-6):
        super().__init__()
        self.C, self.norm_eps = embed_dim, norm_eps
        self.sa = InfinitySelfAttention(embed_dim, num_heads)
        self.ca = TextCrossAttention(embed_dim, kv_dim, num_heads)
        self.ca_norm = nn.LayerNorm(embed_dim, eps=norm_eps)
        self.ffn = FFN(embed_dim, ffn_hidden(embed_dim, mlp_ratio))
        self.ada_gss = nn.Parameter(torch.randn(1, 1, 6, embed_dim) / embed_dim ** 0.5)
        self.drop_path = DropPath(drop_path)

    def forward(self, x_BLC: torch.Tensor, gss_B16C: torch.Tensor, text_BTD: torch.Tensor, mask_BT: torch.Tensor,
                rope: Optional[Tuple[torch.Tensor, torch.Tensor]], attn_mask: Optional[torch.Tensor]
                ) -> torch.Tensor:
        with fp32_region(x_BLC.device):
            g1, g2, s1, s2, t1, t2 = (self.ada_gss.float() + gss_B16C.float()).unbind(2)    # each (B, 1, C)
        h = self.sa(ada_layer_norm(x_BLC, s1, t1, self.norm_eps), rope, attn_mask)
        x_BLC = x_BLC + self.drop_path(h.mul_(g1))
        x_BLC = x_BLC + self.ca(self.ca_norm(x_BLC), text_BTD, mask_BT).float()
        h = self.ffn(ada_layer_norm(x_BLC, s2, t2, self.norm_eps))
        return x_BLC + self.drop_path(h.mul(g2))


class BlockChunk(nn.Module):
    """``block_chunks`` groups of consecutive blocks (official ``MultipleLayers``: key ``module.{j}``)."""

    def __init__(self, blocks: List[InfinityBlock]):
        super().__init__()
        self.module = nn.ModuleList(blocks)
