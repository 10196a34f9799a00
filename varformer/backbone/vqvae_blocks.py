"""Convolutional encoder and decoder of VAR's multi-scale VQVAE (an LDM "VQ-f16"-style autoencoder).

Attribute names follow the official checkpoint keys (`encoder.down.{l}.block.{b}.conv1.weight`, ...), so the
modules load `vae_ch160v4096z32.pth` unchanged. With `ch=160`, `ch_mult=(1, 1, 2, 2, 4)` the encoder maps
(B, 3, 256, 256) in [-1, 1] to a (B, 32, 16, 16) latent and the decoder maps it back.

Besides the plain forward calls, `Encoder.forward_features` and `Decoder.forward_features` return the per-level
feature maps VarFormer's restorer consumes (encoder: after each level's blocks, before downsampling; decoder: after
each level's blocks, before upsampling, plus the output of the middle block).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def group_norm(channels: int) -> nn.GroupNorm:
    # eps 1e-6 (not PyTorch's 1e-5) as in the official autoencoder
    return nn.GroupNorm(num_groups=32, num_channels=channels, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    """GN -> SiLU -> conv3x3 -> GN -> SiLU -> conv3x3, plus a 1x1 `nin_shortcut` when the width changes."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.norm1 = group_norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1)
        self.norm2 = group_norm(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, stride=1, padding=1)
        self.nin_shortcut = (nn.Conv2d(in_channels, out_channels, kernel_size=1) if in_channels != out_channels
                             else nn.Identity())

    def forward(self, x_BCHW: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x_BCHW), inplace=True))
        h = self.conv2(F.silu(self.norm2(h), inplace=True))
        return self.nin_shortcut(x_BCHW) + h


class AttnBlock(nn.Module):
    """Single-head spatial self-attention with 1x1 conv projections, residual."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = group_norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, kernel_size=1)
        self.proj_out = nn.Conv2d(channels, channels, kernel_size=1)

    def forward(self, x_BCHW: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x_BCHW.shape
        qkv = self.qkv(self.norm(x_BCHW)).reshape(B, 3, C, H * W)
        # (B, 1 head, N, C): one exact SDPA call (scale 1/sqrt(C)) instead of two bmm's and a softmax
        q, k, v = (t.transpose(1, 2).unsqueeze(1) for t in qkv.unbind(1))
        out = F.scaled_dot_product_attention(q, k, v)                     # (B, 1, N, C)
        out = out.squeeze(1).transpose(1, 2).reshape(B, C, H, W)
        return x_BCHW + self.proj_out(out)


class Downsample(nn.Module):
    """Zero-pad one column right and one row bottom, then a stride-2 3x3 conv without padding."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, stride=2, padding=0)

    def forward(self, x_BCHW: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x_BCHW, (0, 1, 0, 1), mode='constant', value=0.0))


class Upsample(nn.Module):
    """Nearest-neighbour x2 then a 3x3 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, stride=1, padding=1)

    def forward(self, x_BCHW: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x_BCHW, scale_factor=2, mode='nearest'))


class _Level(nn.Module):
    """One resolution level: `block` (ResNet blocks), `attn` (attention after each block, or empty), and an
    optional `downsample` / `upsample` attribute (absent, so no keys, where the official model has none)."""

    def __init__(self, blocks: list[nn.Module], attns: list[nn.Module]):
        super().__init__()
        self.block = nn.ModuleList(blocks)
        self.attn = nn.ModuleList(attns)

    def run_blocks(self, h: torch.Tensor) -> torch.Tensor:
        for i, block in enumerate(self.block):
            h = block(h)
            if len(self.attn):
                h = self.attn[i](h)
        return h


class MidBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels)
        self.attn_1 = AttnBlock(channels)
        self.block_2 = ResnetBlock(channels, channels)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(h)))


class Encoder(nn.Module):
    """(B, 3, H, W) -> (B, z_channels, H/2^(levels-1), W/2^(levels-1)); attention only at the last level."""

    def __init__(self, ch: int = 160, ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4), num_res_blocks: int = 2,
                 in_channels: int = 3, z_channels: int = 32):
        super().__init__()
        n_levels = len(ch_mult)
        self.conv_in = nn.Conv2d(in_channels, ch, kernel_size=3, stride=1, padding=1)
        self.down = nn.ModuleList()
        c_in = ch
        for level, mult in enumerate(ch_mult):
            c_out = ch * mult
            last = level == n_levels - 1
            blocks = [ResnetBlock(c_in if b == 0 else c_out, c_out) for b in range(num_res_blocks)]
            attns = [AttnBlock(c_out) for _ in range(num_res_blocks)] if last else []
            stage = _Level(blocks, attns)
            if not last:
                stage.downsample = Downsample(c_out)
            self.down.append(stage)
            c_in = c_out
        self.mid = MidBlock(c_in)
        self.norm_out = group_norm(c_in)
        self.conv_out = nn.Conv2d(c_in, z_channels, kernel_size=3, stride=1, padding=1)

    def forward_features(self, x_B3HW: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
        """Returns (z, level_feats, mid): `level_feats[l]` is level l's output before its downsampling
        (for ch=160 at 256 px: 160@256, 160@128, 320@64, 320@32, 640@16), `mid` the middle block's output."""
        h = self.conv_in(x_B3HW)
        level_feats = []
        for stage in self.down:
            h = stage.run_blocks(h)
            level_feats.append(h)
            if hasattr(stage, 'downsample'):
                h = stage.downsample(h)
        mid = self.mid(h)
        z = self.conv_out(F.silu(self.norm_out(mid), inplace=False))
        return z, level_feats, mid

    def forward(self, x_B3HW: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x_B3HW)
        for stage in self.down:
            h = stage.run_blocks(h)
            if hasattr(stage, 'downsample'):
                h = stage.downsample(h)
        return self.conv_out(F.silu(self.norm_out(self.mid(h)), inplace=True))


class Decoder(nn.Module):
    """(B, z_channels, h, w) -> (B, 3, h*2^(levels-1), w*2^(levels-1)); levels run from the last to level 0, and
    `up[l]` is level l (index 0 = full resolution), as in the official key names."""

    def __init__(self, ch: int = 160, ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4), num_res_blocks: int = 2,
                 out_channels: int = 3, z_channels: int = 32):
        super().__init__()
        n_levels = len(ch_mult)
        c_in = ch * ch_mult[-1]
        self.conv_in = nn.Conv2d(z_channels, c_in, kernel_size=3, stride=1, padding=1)
        self.mid = MidBlock(c_in)
        levels: list[_Level] = [None] * n_levels  # type: ignore[list-item]
        for level in reversed(range(n_levels)):
            c_out = ch * ch_mult[level]
            blocks = [ResnetBlock(c_in if b == 0 else c_out, c_out) for b in range(num_res_blocks + 1)]
            attns = [AttnBlock(c_out) for _ in range(num_res_blocks + 1)] if level == n_levels - 1 else []
            stage = _Level(blocks, attns)
            if level != 0:
                stage.upsample = Upsample(c_out)
            levels[level] = stage
            c_in = c_out
        self.up = nn.ModuleList(levels)
        self.norm_out = group_norm(c_in)
        self.conv_out = nn.Conv2d(c_in, out_channels, kernel_size=3, stride=1, padding=1)

    def forward_features(self, z: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
        """Returns (img, level_feats, mid): `mid` after the middle block, `level_feats[l]` level l's output before
        its upsampling (for ch=160: 160@256, 160@128, 320@64, 320@32, 640@16; indexed by level)."""
        mid = self.mid(self.conv_in(z))
        h = mid
        level_feats: list[torch.Tensor] = [None] * len(self.up)  # type: ignore[list-item]
        for level in reversed(range(len(self.up))):
            h = self.up[level].run_blocks(h)
            level_feats[level] = h
            if level != 0:
                h = self.up[level].upsample(h)
        img = self.conv_out(F.silu(self.norm_out(h), inplace=False))
        return img, level_feats, mid

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(z))
        for level in reversed(range(len(self.up))):
            h = self.up[level].run_blocks(h)
            if level != 0:
                h = self.up[level].upsample(h)
        return self.conv_out(F.silu(self.norm_out(h), inplace=True))
