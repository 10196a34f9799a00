"""Swin pieces used by the DAE (spec 5.3): window attention, Swin blocks and the residual Swin group (RSTB).

RSTB(x) = x + conv3x3(SwinBlock(shift 0) -> SwinBlock(shift window/2))(x), on (B, C, H, W) maps. The shifted-window
mask uses -100 (not -inf) like the official SwinIR-style code. The relative-position index and the masks are
recomputed (cached per size and device), not stored: the official checkpoint's copies are dropped by the converter.
Attention runs through ``F.scaled_dot_product_attention`` with the relative-position bias (+ mask) as additive mask.
"""
from __future__ import annotations

from typing import Dict, Tuple

import torch
import torch.nn.functional as F
from torch import nn


def relative_position_index(window: int) -> torch.Tensor:
    """(window^2, window^2) index into the (2w-1)^2 bias table, Swin's standard layout (built on the CPU)."""
    ar = torch.arange(window, device="cpu")
    coords = torch.stack(torch.meshgrid(ar, ar, indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)
    return rel[..., 0] * (2 * window - 1) + rel[..., 1]


def shifted_window_mask(height: int, width: int, window: int, shift: int) -> torch.Tensor:
    """(nW, window^2, window^2) additive mask: 0 inside a region, -100 across regions of the rolled image."""
    img = torch.zeros(height, width, device="cpu")
    cuts = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
    region = 0
    for hs in cuts:
        for ws in cuts:
            img[hs, ws] = region
            region += 1
    win = img.view(height // window, window, width // window, window).permute(0, 2, 1, 3).reshape(-1, window * window)
    diff = win[:, None, :] - win[:, :, None]
    return torch.zeros_like(diff).masked_fill(diff != 0, -100.0)


def window_partition(x_BHWC: torch.Tensor, window: int) -> torch.Tensor:
    B, H, W, C = x_BHWC.shape
    x = x_BHWC.view(B, H // window, window, W // window, window, C).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(B * (H // window) * (W // window), window * window, C)


def window_merge(win_NLC: torch.Tensor, B: int, H: int, W: int, window: int) -> torch.Tensor:
    C = win_NLC.shape[-1]
    x = win_NLC.view(B, H // window, W // window, window, window, C).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(B, H, W, C)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside windows, with a learned relative-position bias per head."""

    def __init__(self, dim: int, heads: int, window: int = 4):
        super().__init__()
        if dim % heads:
            raise ValueError(f"WindowAttention: dim {dim} not divisible by heads {heads}")
        self.heads, self.window = heads, window
        self.scale = (dim // heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(
            torch.empty((2 * window - 1) ** 2, heads).normal_(std=0.02))
        self._index_cache: Dict[str, torch.Tensor] = {}
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def position_bias(self) -> torch.Tensor:
        n = self.window * self.window
        table = self.relative_position_bias_table
        key = str(table.device)
        if key not in self._index_cache:  # not a buffer: a meta-built model would never get its values
            with torch.inference_mode(False):  # a cache made under inference_mode could not be used in training
                self._index_cache[key] = relative_position_index(self.window).reshape(-1).to(table.device)
        bias = table[self._index_cache[key]]
        return bias.view(n, n, self.heads).permute(2, 0, 1)  # (heads, n, n)

    def forward(self, x_BwNC: torch.Tensor, n_windows: int, mask_wNN: torch.Tensor | None) -> torch.Tensor:
        """x: (B*nW, N, C) windows; mask: (nW, N, N) or None."""
        Bw, N, C = x_BwNC.shape
        q, k, v = self.qkv(x_BwNC).view(Bw, N, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        bias = self.position_bias().to(q.dtype)  # (heads, N, N)
        if mask_wNN is None:
            attn_mask = bias[None]
        else:
            per_window = bias[None] + mask_wNN[:, None].to(q.dtype)  # (nW, heads, N, N)
            attn_mask = per_window[None].expand(Bw // n_windows, -1, -1, -1, -1).reshape(Bw, self.heads, N, N)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, scale=self.scale)
        return self.proj(out.transpose(1, 2).reshape(Bw, N, C))


class SwinBlock(nn.Module):
    """Pre-norm Swin block: (shifted) window attention + MLP (ratio 4, exact GELU), LayerNorm eps 1e-5."""

    def __init__(self, dim: int, heads: int, window: int = 4, shift: int = 0, mlp_ratio: int = 4):
        super().__init__()
        self.window, self.shift = window, shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, heads, window)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential()
        self.mlp.fc1 = nn.Linear(dim, mlp_ratio * dim)
        self.mlp.act = nn.GELU()
        self.mlp.fc2 = nn.Linear(mlp_ratio * dim, dim)
        self._masks: Dict[Tuple, torch.Tensor] = {}

    def shift_mask(self, H: int, W: int, device: torch.device) -> torch.Tensor | None:
        if self.shift == 0:
            return None
        key = (H, W, str(device))
        if key not in self._masks:
            with torch.inference_mode(False):
                self._masks[key] = shifted_window_mask(H, W, self.window, self.shift).to(device)
        return self._masks[key]

    def forward(self, x_BHWC: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x_BHWC.shape
        if H % self.window or W % self.window:
            raise ValueError(f"SwinBlock: feature size {H}x{W} not divisible by the window {self.window}")
        h = self.norm1(x_BHWC)
        if self.shift:
            h = torch.roll(h, shifts=(-self.shift, -self.shift), dims=(1, 2))
        n_windows = (H // self.window) * (W // self.window)
        h = self.attn(window_partition(h, self.window), n_windows, self.shift_mask(H, W, x_BHWC.device))
        h = window_merge(h, B, H, W, self.window)
        if self.shift:
            h = torch.roll(h, shifts=(self.shift, self.shift), dims=(1, 2))
        x_BHWC = x_BHWC + h
        return x_BHWC + self.mlp(self.norm2(x_BHWC))


class RSTB(nn.Module):
    """Residual Swin group: ``depth`` Swin blocks (alternating shift 0 / window//2), a 3x3 conv, residual."""

    def __init__(self, dim: int, heads: int, window: int = 4, depth: int = 2):
        super().__init__()
        self.blocks = nn.ModuleList(
            SwinBlock(dim, heads, window, shift=0 if i % 2 == 0 else window // 2)
            for i in range(depth))
        self.conv = nn.Conv2d(dim, dim, 3, padding=1)

    def forward(self, x_BCHW: torch.Tensor) -> torch.Tensor:
        h = x_BCHW.permute(0, 2, 3, 1)
        for blk in self.blocks:
            h = blk(h)
        return x_BCHW + self.conv(h.permute(0, 3, 1, 2).contiguous(memory_format=torch.contiguous_format))
