"""Bridge feature and Anchor-based Feature Transfer (AFT): the official ``cat_rec_syn_bf(_nm)`` and
``AnchorCrossAttnBlock`` (docs/architecture.md, steps 5 and 7).

``BridgeFeature``: g = conv1x1(GN(concat(F_vq, h))), the VQVAE feature of the level (encoder side: of the degraded
input; decoder side: of the predicted clean latent) fused with the current U-Net feature; it drives the scale
selection of the DAE.

``AnchorAttention`` (official ``AnchorCrossAttnBlock``): single-head attention from the DAE output to the prior map
in two steps through M = N/16 anchors (a stride-4 conv of concat(x, prior)): anchors gather from the prior's pixels,
pixels read from the anchors. Cost O(N M C) instead of O(N^2 C); both steps are ordinary SDPA calls.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _tokens(x_BCHW: torch.Tensor) -> torch.Tensor:
    return x_BCHW.flatten(2).transpose(1, 2).contiguous()[:, None]


def group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(32, channels, eps=1e-6, affine=True)


class BridgeFeature(nn.Module):
    def __init__(self, vq_channels: int, h_channels: int, out_channels: int):
        super().__init__()
        self.norm = group_norm(vq_channels + h_channels)
        self.proj = nn.Conv2d(vq_channels + h_channels, out_channels, 1)

    def forward(self, f_vq_BCHW: torch.Tensor, h_BCHW: torch.Tensor) -> torch.Tensor:
        return self.proj(self.norm(torch.cat([f_vq_BCHW, h_BCHW], dim=1)))


class AnchorAttention(nn.Module):
    """out = x + P( softmax_anchors(q a^T / sqrt C) softmax_pixels(a k^T / sqrt C) v ), q from x (the DAE output),
    k, v from the prior map p, anchors a from concat(x, p)."""

    def __init__(self, channels: int, anchor_stride: int = 4):
        super().__init__()
        c = channels
        self.norm_q = group_norm(c)
        self.q = nn.Conv2d(c, c, 1)
        self.norm_kv = group_norm(c)
        self.kv = nn.Conv2d(c, 2 * c, 1)
        self.norm_a = group_norm(2 * c)
        self.a = nn.Conv2d(2 * c, c, anchor_stride, stride=anchor_stride)
        self.proj_out = nn.Conv2d(c, c, 1)

    def forward(self, x_BCHW: torch.Tensor, p_BCHW: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x_BCHW.shape
        # contiguous (B, 1, tokens, C) operands: SDPA's fused CPU kernel needs them (5x faster than the fallback)
        q = _tokens(self.q(self.norm_q(x_BCHW)))                                       # (B, 1, N, C)
        k, v = (_tokens(t) for t in self.kv(self.norm_kv(p_BCHW)).chunk(2, dim=1))
        a = _tokens(self.a(self.norm_a(torch.cat([x_BCHW, p_BCHW], dim=1))))           # (B, 1, M, C)
        anchors = F.scaled_dot_product_attention(a, k, v)                              # (B, 1, M, C)
        out = F.scaled_dot_product_attention(q, a, anchors)                            # (B, 1, N, C)
        out = out[:, 0].transpose(1, 2).reshape(B, C, H, W)
        return x_BCHW + self.proj_out(out)
