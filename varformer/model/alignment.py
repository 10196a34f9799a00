"""Optional decoder alignment (``dec_adjust=True``, official stage-2 training layout; official ``TWAM`` and
``TextureWarpingModule``).

Each step aligns the U-Net decoder feature ``x_d`` to the frozen VQVAE-decoder feature ``x_g`` of the predicted
clean latent: a channel ("transposed") cross-attention exchanges information between the two, then a modulated
deformable 3x3 conv (4 offset groups, ``torchvision.ops.deform_conv2d``) warps ``x_d`` with offsets predicted
from both, refined by the previous (upsampled) offset feature.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from torchvision.ops import deform_conv2d

from varformer.model.adapter import LayerNorm2d
from varformer.model.aft import group_norm
from varformer.runtime import fp32_region


class ChannelCrossAttention(nn.Module):
    """Official ``TWAM``: per head, a (c/h x c/h) attention between channels of x_d and x_g (L2-normalised over
    pixels, learned per-head temperature); x_d += beta * att V_g, x_g += gamma * att V_d (beta, gamma zero-init)."""

    def __init__(self, channels: int, heads: int):
        super().__init__()
        c = channels
        self.heads = heads
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.norm_d = LayerNorm2d(c)
        self.norm_g = LayerNorm2d(c)
        self.q_d = nn.Conv2d(c, c, 1)
        self.q_g = nn.Conv2d(c, c, 1)
        self.v_d = nn.Conv2d(c, c, 1)
        self.v_g = nn.Conv2d(c, c, 1)
        self.beta = nn.Parameter(torch.zeros(1, c, 1, 1))
        self.gamma = nn.Parameter(torch.zeros(1, c, 1, 1))

    def forward(self, x_d: torch.Tensor, x_g: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        B, C, H, W = x_d.shape

        def heads(t: torch.Tensor) -> torch.Tensor:
            return rearrange(t, "b (h c) y x -> b h c (y x)", h=self.heads)

        q_d = F.normalize(heads(self.q_d(self.norm_d(x_d))), dim=-1)
        q_g = F.normalize(heads(self.q_g(self.norm_g(x_g))), dim=-1)
        att = ((q_d @ q_g.transpose(-2, -1)) * self.temperature).softmax(dim=-1)   # (B, h, c/h, c/h)
        g2d = rearrange(att @ heads(self.v_g(x_g)), "b h c (y x) -> b (h c) y x", y=H)
        d2g = rearrange(att @ heads(self.v_d(x_d)), "b h c (y x) -> b (h c) y x", y=H)
        return x_d + self.beta * g2d, x_g + self.gamma * d2g


class ModulatedDeformConv(nn.Module):
    """DCNv2 3x3 whose offsets and mask come from another feature: conv_offset -> (o1 | o2 | mask), offsets
    concat(o1, o2), mask sigmoid; ``torchvision.ops.deform_conv2d`` layout."""

    def __init__(self, channels: int, offset_groups: int = 4):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(channels, channels, 3, 3))
        self.bias = nn.Parameter(torch.zeros(channels))
        nn.init.kaiming_uniform_(self.weight, a=5 ** 0.5)
        self.conv_offset = nn.Conv2d(channels, 3 * offset_groups * 9, 3, padding=1)
        nn.init.zeros_(self.conv_offset.weight)  # start as a plain conv (zero offsets, mask 0.5)
        nn.init.zeros_(self.conv_offset.bias)

    def forward(self, x: torch.Tensor, offset_feat: torch.Tensor) -> torch.Tensor:
        o1, o2, mask = self.conv_offset(offset_feat).chunk(3, dim=1)
        offset = torch.cat([o1, o2], dim=1)
        with fp32_region(x.device):  # no bf16 kernel for deform_conv2d
            return deform_conv2d(x.float(), offset.float(), self.weight.float(), self.bias.float(), padding=(1, 1),
                                 mask=mask.float().sigmoid())


class TextureWarping(nn.Module):
    """Offsets from concat(x_g, x_d) (1x1, GN, SiLU, dw7x7, GN, SiLU, 1x1), then [concat previous offset]
    3x3, GN, SiLU; warp x_d with a modulated deformable conv. Returns (warped x_d, offset feature)."""

    def __init__(self, channels: int, prev_offset_channels: int = 0):
        super().__init__()
        c = channels
        self.offset_conv1 = nn.Sequential(
            nn.Conv2d(2 * c, c, 1), group_norm(c), nn.SiLU(),
            nn.Conv2d(c, c, 7, padding=3, groups=c), group_norm(c), nn.SiLU(),
            nn.Conv2d(c, c, 1))
        self.offset_conv2 = nn.Sequential(
            nn.Conv2d(c + prev_offset_channels, c, 3, padding=1), group_norm(c), nn.SiLU())
        self.dcn = ModulatedDeformConv(c)

    def forward(self, x_d: torch.Tensor, x_g: torch.Tensor, prev_offset: Optional[torch.Tensor] = None
                ) -> Tuple[torch.Tensor, torch.Tensor]:
        offset = self.offset_conv1(torch.cat([x_g, x_d], dim=1))
        if prev_offset is not None:
            offset = torch.cat([offset, prev_offset.to(offset.dtype)], dim=1)
        offset = self.offset_conv2(offset)
        return self.dcn(x_d, offset).to(x_d.dtype), offset


class AlignStep(nn.Module):
    """One alignment step; ``merge`` (1x1 on concat(x_d, warped)) exists on every step but the first."""

    def __init__(self, channels: int, heads: int, prev_offset_channels: int, merge: bool):
        super().__init__()
        self.attn = ChannelCrossAttention(channels, heads)
        self.warp = TextureWarping(channels, prev_offset_channels)
        self.merge = nn.Conv2d(2 * channels, channels, 1) if merge else None

    def forward(self, h: torch.Tensor, vq_feat: torch.Tensor, prev_offset: Optional[torch.Tensor]
                ) -> Tuple[torch.Tensor, torch.Tensor]:
        if prev_offset is not None:
            prev_offset = 2 * F.interpolate(prev_offset, scale_factor=2, mode="bilinear", align_corners=False)
        x_d, x_g = self.attn(h, vq_feat)
        warped, offset = self.warp(x_d, x_g, prev_offset)
        if self.merge is None:
            return warped, offset
        return self.merge(torch.cat([x_d, warped], dim=1)), offset
