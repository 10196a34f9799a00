"""Cross-attention injection of the degraded tokens into the VAR loop (official ``CrossAttentionAR``; docs/architecture.md).

After VAR block j (j < n_cross) the hidden state of the current scale is *replaced* by
``proj(merge(softmax(scale * q k^T) v))`` with q from the degraded-token map ``f_d`` and k, v from the VAR hidden
state ``f_var`` (same length). Always 16 heads, scale 0.25 / sqrt(head_dim), no L2 norm, k has no bias.

Head layouts (how the per-head outputs O (R, 16, l, hd) become (R, l, C)):

- ``official``: the official code's re-cut. It reads O in (head, row, token, dim) order as one flat buffer and
  cuts that buffer into rows again, which mixes the heads of different rows. The official test script runs one
  image (rows = its two CFG halves), so here the re-cut is applied within each image's pair of rows (b, B + b):
  every image gets exactly what the official code gives it alone, whatever the batch. Required for the released
  weights; it is also what makes the two CFG halves differ.
- ``standard``: the usual head merge (B, l, heads*hd). A *different model*: the two CFG halves then stay identical
  and the rollout runs one half only. For new training only.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from varformer import ops
from varformer.model.settings import HEAD_LAYOUTS



class CrossAttentionInjection(nn.Module):
    def __init__(self, width: int, heads: int = 16, head_layout: str = "official"):
        super().__init__()
        if head_layout not in HEAD_LAYOUTS:
            raise ValueError(f"head_layout must be one of {HEAD_LAYOUTS}, got {head_layout!r}")
        if width % heads:
            raise ValueError(f"cross-attention width {width} not divisible by {heads} heads")
        self.heads, self.head_layout = heads, head_layout
        self.scale = 0.25 / (width // heads) ** 0.5
        self.mat_q = nn.Linear(width, width, bias=False)
        self.mat_kv = nn.Linear(width, 2 * width, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(width))
        self.v_bias = nn.Parameter(torch.zeros(width))
        self.proj = ops.Linear(width, width)

    def query(self, f_d_RlC: torch.Tensor) -> torch.Tensor:
        """Queries from the degraded tokens, (R, heads, l, hd). Separate so the rollout can compute them once for
        both CFG halves (their degraded tokens are identical)."""
        R, l, C = f_d_RlC.shape
        q = ops.linear(f_d_RlC, self.mat_q.weight, self.q_bias)
        return rearrange(q, "r l (h d) -> r h l d", h=self.heads)

    def forward(self, f_d_RlC: torch.Tensor | None, f_var_RlC: torch.Tensor, *,
                q_RHlc: torch.Tensor | None = None, n_images: int | None = None) -> torch.Tensor:
        """``f_var`` (R, l, C) hidden state; ``f_d`` (R, l, C) degraded tokens, or precomputed ``q_RHlc`` (R or
        n_images rows, expanded). With the official layout R = 2 * n_images (rows b and n_images + b are image b)."""
        R = f_var_RlC.shape[0]
        if q_RHlc is None:
            q_RHlc = self.query(f_d_RlC)
        if q_RHlc.shape[0] != R:
            q_RHlc = q_RHlc.repeat(R // q_RHlc.shape[0], 1, 1, 1)
        kv_bias = torch.cat([torch.zeros_like(self.v_bias), self.v_bias])
        kv = ops.linear(f_var_RlC, self.mat_kv.weight, kv_bias)
        k, v = rearrange(kv, "r l (two h d) -> two r h l d", two=2, h=self.heads).unbind(0)
        o = F.scaled_dot_product_attention(q_RHlc.to(k.dtype), k, v, scale=self.scale)    # (R, heads, l, hd)
        return self.proj(merge_heads(o, self.head_layout, n_images))


def merge_heads(o_RHlc: torch.Tensor, head_layout: str, n_images: int | None = None) -> torch.Tensor:
    """(R, heads, l, hd) -> (R, l, heads * hd) with the given layout (see the module docstring)."""
    R, H, l, hd = o_RHlc.shape
    if head_layout == "standard":
        return rearrange(o_RHlc, "r h l d -> r l (h d)")
    B = R // 2 if n_images is None else n_images
    if R != 2 * B:
        raise ValueError(f"official head layout needs the two CFG halves (2 x {B} rows), got {R} rows")
    # per image: its rows (b, B + b) as a pair; flat (head, row-of-pair, token, dim) buffer cut into 2 rows
    pair = rearrange(o_RHlc, "(two b) h l d -> b h two l d", two=2)          # (B, H, 2, l, hd)
    # the flat (head, row-of-pair, token, dim) buffer of each image re-read as 2 rows of (token, head*dim)
    recut = pair.reshape(B, 2, l, H * hd)
    return rearrange(recut, "b two l c -> (two b) l c")
