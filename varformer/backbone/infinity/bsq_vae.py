"""Infinity's BSQ-VAE tokenizer without its quantiser (official infinity/models/bsq_vae/flux_vqgan.py ``Encoder``,
``Decoder``; ``infinity_vae_d32reg.pth`` uses base width 128, ``ch_mult (1, 2, 4, 4, 4)``, 2 ResNet blocks per
level in the encoder and 3 in the decoder, no attention, ``z_channels = 32``, downsampling 16).

Keys follow the official classes: every convolution sits in a ``Conv`` wrapper (``*.conv.weight``) and every
GroupNorm in a ``Normalize`` wrapper (``*.norm.weight``), e.g. ``encoder.down.0.block.0.conv1.conv.weight``,
``encoder.down.0.block.0.norm1.norm.weight``, ``encoder.down.0.downsample.conv.conv.weight``,
``decoder.up.4.upsample.conv.conv.weight``. The quantiser has no parameters (``bsq_quantizer``).

    vae = BSQVAE(base_ch=128, ch_mult=(1, 2, 4, 4, 4), num_res_blocks=2, z_channels=32)
    h = vae.encode(img_pm1)             # (B, 3, 16G, 16G) in [-1, 1] -> (B, 32, G, G), before quantisation
    img = vae.decode(z_BCGG)            # -> (B, 3, 16G, 16G), clamped to [-1, 1]

GroupNorm(32 groups, or 24 where the width is not a multiple of 32, eps 1e-6) and swish; downsampling pads one row
and column at the bottom/right and runs a stride-2 3x3 convolution; upsampling is nearest x2 + 3x3 convolution.
The encoder's and decoder's inputs and every GroupNorm input are made contiguous first: a channels-last tensor (what
some convolutions return at batch 2) would otherwise run other kernels (another summation order), and an image's
latent would depend on its batch.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F


class Conv(nn.Module):
    """A 2-D convolution under the key ``conv`` (official ``Conv`` with ``cnn_type='2d'``)."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, stride: int = 1, padding: int = 0):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel_size, stride=stride, padding=padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Normalize(nn.Module):
    """GroupNorm under the key ``norm``: 32 groups, or 24 where the width is not a multiple of 32."""

    def __init__(self, channels: int):
        super().__init__()
        groups = 32 if channels % 32 == 0 else 24 if channels % 24 == 0 else 0
        if not groups:
            raise ValueError(f"BSQ-VAE widths must be multiples of 32 (or 24), got {channels}")
        self.norm = nn.GroupNorm(groups, channels, eps=1e-6, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.contiguous())


class ResnetBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.norm1 = Normalize(in_ch)
        self.conv1 = Conv(in_ch, out_ch, 3, padding=1)
        self.norm2 = Normalize(out_ch)
        self.conv2 = Conv(out_ch, out_ch, 3, padding=1)
        self.nin_shortcut = Conv(in_ch, out_ch, 1) if in_ch != out_ch else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return (x if self.nin_shortcut is None else self.nin_shortcut(x)) + h


class Downsample(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv = Conv(ch, ch, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv = Conv(ch, ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


def _level(blocks, resample=None) -> nn.Module:
    """One resolution level, keys ``block.{j}`` and ``downsample``/``upsample`` (an empty ``attn`` list: none)."""
    level = nn.Module()
    level.block = nn.ModuleList(blocks)
    if resample is not None:
        setattr(level, type(resample).__name__.lower(), resample)
    return level


def _mid(ch: int) -> nn.Module:
    mid = nn.Module()
    mid.block_1, mid.block_2 = ResnetBlock(ch, ch), ResnetBlock(ch, ch)
    return mid


class Encoder(nn.Module):
    def __init__(self, base_ch: int, ch_mult: Sequence[int], num_res_blocks: int, z_channels: int,
                 in_channels: int = 3):
        super().__init__()
        self.conv_in = Conv(in_channels, base_ch, 3, padding=1)
        self.down = nn.ModuleList()
        block_in = base_ch
        for i, mult in enumerate(ch_mult):
            out = base_ch * mult
            blocks = [ResnetBlock(block_in if j == 0 else out, out) for j in range(num_res_blocks)]
            block_in = out
            self.down.append(_level(blocks, Downsample(out) if i < len(ch_mult) - 1 else None))
        self.mid = _mid(block_in)
        self.norm_out = Normalize(block_in)
        self.conv_out = Conv(block_in, z_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for level in self.down:
            for blk in level.block:
                h = blk(h)
            if hasattr(level, "downsample"):
                h = level.downsample(h)
        h = self.mid.block_2(self.mid.block_1(h))
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    def __init__(self, base_ch: int, ch_mult: Sequence[int], num_res_blocks: int, z_channels: int,
                 out_channels: int = 3):
        super().__init__()
        block_in = base_ch * ch_mult[-1]
        self.conv_in = Conv(z_channels, block_in, 3, padding=1)
        self.mid = _mid(block_in)
        levels = [None] * len(ch_mult)
        for i in reversed(range(len(ch_mult))):           # built coarsest first, indexed by level
            out = base_ch * ch_mult[i]
            blocks = [ResnetBlock(block_in if j == 0 else out, out) for j in range(num_res_blocks + 1)]
            block_in = out
            levels[i] = _level(blocks, Upsample(out) if i > 0 else None)
        self.up = nn.ModuleList(levels)
        self.norm_out = Normalize(block_in)
        self.conv_out = Conv(block_in, out_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid.block_2(self.mid.block_1(self.conv_in(z)))
        for level in reversed(self.up):
            for blk in level.block:
                h = blk(h)
            if hasattr(level, "upsample"):
                h = level.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class BSQVAE(nn.Module):
    def __init__(self, base_ch: int = 128, ch_mult: Sequence[int] = (1, 2, 4, 4, 4), num_res_blocks: int = 2,
                 z_channels: int = 32):
        super().__init__()
        self.z_channels = z_channels
        self.downsample = 2 ** (len(ch_mult) - 1)
        self.encoder = Encoder(base_ch, ch_mult, num_res_blocks, z_channels)
        self.decoder = Decoder(base_ch, ch_mult, num_res_blocks, z_channels)

    def encode(self, img_pm1: torch.Tensor) -> torch.Tensor:
        """The encoder's continuous latent (B, z, H / 16, W / 16) (official ``encode_for_raw_features``)."""
        return self.encoder(img_pm1.contiguous())

    def decode(self, z_BCHW: torch.Tensor) -> torch.Tensor:
        """The decoder's image, clamped to [-1, 1] (official ``decode``)."""
        return self.decoder(z_BCHW.contiguous()).clamp(-1, 1)
