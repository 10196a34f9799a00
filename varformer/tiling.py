"""Run a fixed-size restorer on images of any size: padding and overlapping tiles blended with a smooth window.

VarFormer only accepts 256x256 inputs (its quantizer needs a 16x16 latent). An image is cut into ``tile``-sized
tiles with at least ``overlap`` pixels shared between neighbours; the last row/column of tiles is aligned to the
border so no tile leaves the image. Each tile's output is weighted by a separable raised-cosine ramp over the
overlap on the sides that have a neighbour (flat elsewhere, so image borders keep full weight), and the weighted
sum is divided by the summed weights: an identity model comes back unchanged, and a model that is only locally
different at tile borders blends without visible seams. Images smaller than a tile are reflect-padded (replicate
when too small to reflect) and cropped back.

Used by ``varformer restore`` and by the evaluator's ``full`` protocol (the same function, so both agree).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterator, List, Sequence, Tuple

import torch
import torch.nn.functional as F

Restorer = Callable[[torch.Tensor], torch.Tensor]  # (N,3,t,t) in [0,1] -> (N,3,t,t) in [0,1]


def tile_starts(size: int, tile: int, overlap: int) -> List[int]:
    """Start offsets along one axis: stride ``tile - overlap`` (or less), last tile flush with the border."""
    if size <= tile:
        return [0]
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap must be in [0, tile), got overlap={overlap}, tile={tile}")
    n = math.ceil((size - overlap) / (tile - overlap))
    # spread n tiles evenly so every overlap is >= the requested one
    return [round(i * (size - tile) / (n - 1)) for i in range(n)] if n > 1 else [0]


def _ramp(length: int, rise: int, fall: int, device, dtype) -> torch.Tensor:
    """1 in the middle, raised-cosine ramps of ``rise`` / ``fall`` samples at the ends (0: no ramp)."""
    w = torch.ones(length, device=device, dtype=dtype)
    for n, at_start in ((rise, True), (fall, False)):
        if n > 0:
            # strictly positive (half-sample offset) so a pixel covered by one tile never divides by zero
            r = 0.5 - 0.5 * torch.cos(math.pi * (torch.arange(n, device=device, dtype=dtype) + 0.5) / n)
            if at_start:
                w[:n] = torch.minimum(w[:n], r)
            else:
                w[length - n:] = torch.minimum(w[length - n:], r.flip(0))
    return w


@dataclass(frozen=True)
class Tile:
    y: int
    x: int
    weight_yx: torch.Tensor  # (t, t) blending weight of this tile


def plan_tiles(height: int, width: int, tile: int, overlap: int, device=None,
               dtype=torch.float32) -> List[Tile]:
    """All tiles covering a (height, width) image already padded to at least ``tile`` on both sides."""
    ys, xs = tile_starts(height, tile, overlap), tile_starts(width, tile, overlap)
    def ramps(starts: List[int]) -> List[torch.Tensor]:
        # ramp each side over the overlap actually shared with the neighbour on that side
        return [_ramp(tile, starts[i - 1] + tile - s if i > 0 else 0,
                      s + tile - starts[i + 1] if i + 1 < len(starts) else 0, device, dtype)
                for i, s in enumerate(starts)]

    wys, wxs = ramps(ys), ramps(xs)
    out = []
    for y, wy in zip(ys, wys):
        for x, wx in zip(xs, wxs):
            out.append(Tile(y, x, wy[:, None] * wx[None, :]))
    return out


def pad_to_at_least(x_B3HW: torch.Tensor, size: int, multiple: int = 1) -> Tuple[torch.Tensor, Tuple[int, int]]:
    """Pad bottom/right to at least ``size`` and to a multiple of ``multiple``; returns the padded batch and (H, W)."""
    H, W = x_B3HW.shape[-2:]
    Hp = max(size, math.ceil(H / multiple) * multiple)
    Wp = max(size, math.ceil(W / multiple) * multiple)
    if (Hp, Wp) == (H, W):
        return x_B3HW, (H, W)
    ph, pw = Hp - H, Wp - W
    mode = "reflect" if ph < H and pw < W else "replicate"
    return F.pad(x_B3HW, (0, pw, 0, ph), mode=mode), (H, W)


def iter_tiles(x_13HW: torch.Tensor, tiles: Sequence[Tile], tile: int) -> Iterator[torch.Tensor]:
    for t in tiles:
        yield x_13HW[:, :, t.y:t.y + tile, t.x:t.x + tile]


class TileAccumulator:
    """Weighted sum of tile outputs for one image; ``result()`` divides by the summed weights and crops."""

    def __init__(self, padded_hw: Tuple[int, int], out_hw: Tuple[int, int], channels: int = 3,
                 device=None, dtype=torch.float32):
        self.acc = torch.zeros(channels, *padded_hw, device=device, dtype=dtype)
        self.wsum = torch.zeros(1, *padded_hw, device=device, dtype=dtype)
        self.out_hw = out_hw

    def add(self, t: Tile, out_3tt: torch.Tensor) -> None:
        th, tw = out_3tt.shape[-2:]
        w = t.weight_yx.to(self.acc.device, self.acc.dtype)
        self.acc[:, t.y:t.y + th, t.x:t.x + tw] += out_3tt.to(self.acc.dtype) * w
        self.wsum[:, t.y:t.y + th, t.x:t.x + tw] += w

    def result(self) -> torch.Tensor:
        H, W = self.out_hw
        return (self.acc / self.wsum)[:, :H, :W]


def tiled_forward(fn: Restorer, x_B3HW: torch.Tensor, tile: int = 256, overlap: int = 32,
                  batch_size: int = 4) -> torch.Tensor:
    """Apply ``fn`` (fixed ``tile`` x ``tile`` input) to a batch of images of any size; tiles are batched.

    Images whose size is exactly ``tile`` x ``tile`` go through ``fn`` directly (no tiling, no padding).
    """
    B, C, H, W = x_B3HW.shape
    if (H, W) == (tile, tile):
        return torch.cat([fn(x_B3HW[i:i + batch_size]) for i in range(0, B, batch_size)])
    x_pad, _ = pad_to_at_least(x_B3HW, tile)
    Hp, Wp = x_pad.shape[-2:]
    tiles = plan_tiles(Hp, Wp, tile, overlap, device=x_B3HW.device)
    jobs = [(b, t) for b in range(B) for t in tiles]  # tiles of all images share batches
    accs = [TileAccumulator((Hp, Wp), (H, W), C, device=x_B3HW.device) for _ in range(B)]
    for start in range(0, len(jobs), batch_size):
        chunk = jobs[start:start + batch_size]
        inp = torch.stack([x_pad[b, :, t.y:t.y + tile, t.x:t.x + tile] for b, t in chunk])
        out = fn(inp)
        for (b, t), o in zip(chunk, out):
            accs[b].add(t, o)
    return torch.stack([a.result() for a in accs]).to(x_B3HW.dtype)
