"""The Adapter's convolutional part (official ``ft_layers``): 4 AIEM blocks on the 32x16x16 VQVAE latent.

The paper calls the Adapter "self-attention blocks"; the official code uses NAFNet-like conv blocks with a
large-kernel spatial attention, a channel attention, a simple gate and curve-adjustment convs (IMAConv), which is
what is built here (docs/official-differences.md). With the official zero init of ``beta``/``gamma`` every block starts as identity.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class LayerNorm2d(nn.Module):
    """LayerNorm over channels at every pixel (biased variance), affine, for (B, C, H, W) maps."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x_BCHW: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x_BCHW.permute(0, 2, 3, 1), x_BCHW.shape[1:2], self.weight, self.bias,
                            self.eps).permute(0, 3, 1, 2)


def simple_gate(x_BCHW: torch.Tensor) -> torch.Tensor:
    """Split channels in two halves and multiply them (NAFNet's parameter-free gate)."""
    a, b = x_BCHW.chunk(2, dim=1)
    return a * b


class CurveAdjustConv(nn.Module):
    """IMAConv: per channel split, a light-enhancement curve x <- x + a x (1 - x) (3 iterations) on the clamped
    split, its curve parameters predicted from the other splits, then a 3x3 conv per split."""

    def __init__(self, channels: int = 32, n_splits: int = 4, n_curve: int = 3):
        super().__init__()
        if channels % n_splits:
            raise ValueError(f"CurveAdjustConv: channels {channels} not divisible by n_splits {n_splits}")
        self.split = channels // n_splits
        self.n_curve = n_curve
        rest = channels - self.split
        self.curve_params = nn.ModuleList(
            nn.Sequential(nn.Conv2d(rest, self.split, 5, padding=2), nn.ReLU(),
                          nn.Conv2d(self.split, self.split, 3, padding=1), nn.ReLU(),
                          nn.Conv2d(self.split, n_curve, 1), nn.Sigmoid())
            for _ in range(n_splits))
        self.convs = nn.ModuleList(nn.Conv2d(self.split, self.split, 3, padding=1)
                                   for _ in range(n_splits))

    def forward(self, x_BCHW: torch.Tensor) -> torch.Tensor:
        parts = x_BCHW.split(self.split, dim=1)
        out = []
        for i, (predict, conv) in enumerate(zip(self.curve_params, self.convs)):
            a = predict(torch.cat(parts[:i] + parts[i + 1:], dim=1))
            # clamp to [0, 1] written as the official relu difference (bit-identical above 2 too)
            x = F.relu(parts[i]) - F.relu(parts[i] - 1)
            for j in range(self.n_curve):
                x = x + a[:, j:j + 1] * x * (1 - x)
            out.append(conv(x))
        return torch.cat(out, dim=1)


class AIEMBlock(nn.Module):
    """One Adapter block (official ``AIEM``): gated conv branch with large-kernel x channel attention, then a gated
    curve-adjustment branch; both residual with zero-initialised per-channel scales."""

    def __init__(self, channels: int = 32):
        super().__init__()
        c, c2 = channels, 2 * channels
        self.norm1 = LayerNorm2d(c)
        self.expand = nn.Conv2d(c, c2, 1)
        self.dwconv = nn.Conv2d(c2, c2, 3, padding=1, groups=c2)
        # large-kernel spatial attention: dw5x5, dilated dw7x7 (receptive field 23), pointwise
        self.lka_dw5 = nn.Conv2d(c2, c2, 5, padding=2, groups=c2)
        self.lka_dw7_dil3 = nn.Conv2d(c2, c2, 7, padding=9, dilation=3, groups=c2)
        self.lka_pw = nn.Conv2d(c2, c, 1)
        self.channel_attn = nn.Conv2d(c2, c, 1)
        self.project = nn.Conv2d(c, c, 1)
        self.norm2 = LayerNorm2d(c)
        self.ffn_expand = nn.Conv2d(c, c2, 1)
        self.curve = CurveAdjustConv(c)
        self.ffn_project = nn.Conv2d(c, c, 1)
        self.beta = nn.Parameter(torch.zeros(1, c, 1, 1))
        self.gamma = nn.Parameter(torch.zeros(1, c, 1, 1))

    def forward(self, u_BCHW: torch.Tensor) -> torch.Tensor:
        t = self.dwconv(self.expand(self.norm1(u_BCHW)))
        ca = self.channel_attn(F.adaptive_avg_pool2d(t, 1))
        la = self.lka_pw(self.lka_dw7_dil3(self.lka_dw5(t)))
        y = u_BCHW + self.beta * self.project(ca * la * simple_gate(t))
        z = self.curve(simple_gate(self.ffn_expand(self.norm2(y))))
        return y + self.gamma * self.ffn_project(z)


class Adapter(nn.Module):
    """Official ``ft_layers``: ``n_blocks`` AIEM blocks applied to the latent ``f`` (B, 32, 16, 16)."""

    def __init__(self, channels: int = 32, n_blocks: int = 4):
        super().__init__()
        self.blocks = nn.ModuleList(AIEMBlock(channels) for _ in range(n_blocks))

    def forward(self, f_BCHW: torch.Tensor) -> torch.Tensor:
        for blk in self.blocks:
            f_BCHW = blk(f_BCHW)
        return f_BCHW
