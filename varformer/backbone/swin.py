"""Swin pieces the restorers share (VarFormer's DAE uses these SwinIR-style blocks of the official code): window
attention, Swin blocks and the residual Swin group (RSTB).

RSTB(x) = x + conv3x3(SwinBlock(shift 0) -> SwinBlock(shift window/2))(x), on (B, C, H, W) maps. The shifted-window
mask uses -100 (not -inf) like the official SwinIR-style code. The relative-position index and the masks are
recomputed (cached per size and device), not stored: the official checkpoint's copies are dropped by the converter.
Attention runs through ``F.scaled_dot_product_attention`` with the relative-position bias (+ mask) as additive mask.
"""
from __future__ import annotations

from typing import Dict, Tuple

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from varformer import ops


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


def window_order(height: int, width: int, window: int, shift: int) -> torch.Tensor:
    """(H*W,) gather index: token j of the window-major layout of the image rolled by -shift (what torch.roll
    followed by a window partition gives) is flat pixel ``index[j]`` of the unrolled image. One gather replaces
    roll + partition (and its inverse replaces merge + roll back)."""
    wy, wx, iy, ix = torch.meshgrid(torch.arange(height // window), torch.arange(width // window),
                                    torch.arange(window), torch.arange(window), indexing="ij")
    y = (wy * window + iy + shift) % height
    x = (wx * window + ix + shift) % width
    return (y * width + x).reshape(-1)


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
        self.qkv = ops.Linear(dim, 3 * dim)
        self.proj = ops.Linear(dim, dim)

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
        q, k, v = rearrange(self.qkv(x_BwNC), "w n (three h d) -> three w h n d", three=3, h=self.heads).unbind(0)
        bias = self.position_bias().to(q.dtype)  # (heads, N, N)
        if mask_wNN is None:
            attn_mask = bias[None]
        else:
            per_window = bias[None] + mask_wNN[:, None].to(q.dtype)  # (nW, heads, N, N)
            attn_mask = per_window[None].expand(Bw // n_windows, -1, -1, -1, -1).reshape(Bw, self.heads, N, N)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, scale=self.scale)
        return self.proj(rearrange(out, "w h n d -> w n (h d)"))


class SwinBlock(nn.Module):
    """Pre-norm Swin block: (shifted) window attention + MLP (ratio 4, exact GELU), LayerNorm eps 1e-5.
    Works on (B, H*W, C) tokens in row-major pixel order."""

    def __init__(self, dim: int, heads: int, window: int = 4, shift: int = 0, mlp_ratio: float = 4):
        super().__init__()
        self.window, self.shift = window, shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, heads, window)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential()
        hidden = int(dim * mlp_ratio)
        self.mlp.fc1 = ops.Linear(dim, hidden, activation="gelu")  # exact GELU, fused where it can be
        self.mlp.fc2 = ops.Linear(hidden, dim)
        self._layout: Dict[Tuple, Tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]] = {}

    def layout(self, H: int, W: int, device: torch.device):
        """(gather index, inverse index, shift mask or None) for this size, cached per device."""
        key = (H, W, str(device))
        if key not in self._layout:
            with torch.inference_mode(False):  # a cache made under inference_mode could not be used in training
                order = window_order(H, W, self.window, self.shift)
                inverse = torch.empty_like(order)
                inverse[order] = torch.arange(order.numel())
                mask = shifted_window_mask(H, W, self.window, self.shift) if self.shift else None
                self._layout[key] = (order.to(device), inverse.to(device),
                                     None if mask is None else mask.to(device))
        return self._layout[key]

    def forward(self, x_BLC: torch.Tensor, H: int, W: int) -> torch.Tensor:
        B, L, C = x_BLC.shape
        if H % self.window or W % self.window:
            raise ValueError(f"SwinBlock: feature size {H}x{W} not divisible by the window {self.window}")
        order, inverse, mask = self.layout(H, W, x_BLC.device)
        n_windows = (H // self.window) * (W // self.window)
        win = rearrange(self.norm1(x_BLC).index_select(1, order), "b (w n) c -> (b w) n c", w=n_windows)
        h = rearrange(self.attn(win, n_windows, mask), "(b w) n c -> b (w n) c", b=B).index_select(1, inverse)
        x_BLC = x_BLC + h
        return x_BLC + self.mlp(self.norm2(x_BLC))


class RSTB(nn.Module):
    """Residual Swin group: ``depth`` Swin blocks (alternating shift 0 / window//2), a 3x3 conv, residual."""

    def __init__(self, dim: int, heads: int, window: int = 4, depth: int = 2, mlp_ratio: float = 4):
        super().__init__()
        self.blocks = nn.ModuleList(
            SwinBlock(dim, heads, window, shift=0 if i % 2 == 0 else window // 2, mlp_ratio=mlp_ratio)
            for i in range(depth))
        self.conv = nn.Conv2d(dim, dim, 3, padding=1)

    def forward(self, x_BCHW: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x_BCHW.shape
        h = x_BCHW.flatten(2).transpose(1, 2).contiguous()    # (B, HW, C) tokens
        for blk in self.blocks:
            h = blk(h, H, W)
        return x_BCHW + self.conv(h.transpose(1, 2).reshape(B, C, H, W))
