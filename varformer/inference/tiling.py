"""Run a fixed-size restorer on images of any size: padding and overlapping tiles blended with a smooth window.

VarFormer only accepts 256x256 inputs (its quantizer needs a 16x16 latent). An image is cut into ``tile``-sized
tiles with at least ``overlap`` pixels shared between neighbours; tiles are spread evenly and the last row/column
is flush with the border, so no tile leaves the image. Each tile's output is weighted by a separable raised-cosine
ramp over the overlap on the sides that have a neighbour (flat elsewhere, so image borders keep full weight), and
the weighted sum is divided by the summed weights. The two ramps of an overlap sum to one, so an identity model
comes back unchanged, and errors a model makes near a tile's edge (zero padding, missing context) are damped by
the small weight the window gives them there: no visible seams. Images smaller than a tile are mirror-padded on the
bottom/right and cropped back.

Tiles of several images share batches (``tiled_forward_stream``), so a folder of small images keeps the batch full.
Used by ``varformer restore`` and by the evaluator's ``full`` protocol (the same function, so both agree).
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Callable, Deque, Hashable, Iterable, Iterator, List, Tuple

import torch
import torch.nn.functional as F

TileFn = Callable[[torch.Tensor], torch.Tensor]  # (N,3,t,t) in [0,1] -> (N,3,t,t) in [0,1], e.g. a Restorer


def check_tiling_args(tile: int, overlap: int, batch_size: int = 1) -> None:
    if tile < 1:
        raise ValueError(f"tile must be >= 1, got {tile}")
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap must be in [0, tile), got overlap={overlap}, tile={tile}")
    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")


def tile_starts(size: int, tile: int, overlap: int) -> List[int]:
    """Start offsets along one axis: as few tiles as keep every overlap >= ``overlap``, last flush with the border."""
    check_tiling_args(tile, overlap)
    if size <= tile:
        return [0]
    n = math.ceil((size - overlap) / (tile - overlap))
    # even spread: stride (size - tile) / (n - 1) <= tile - overlap by the choice of n, and rounding keeps that
    return [round(i * (size - tile) / (n - 1)) for i in range(n)]


def ramp(length: int, rise: int, fall: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """1 in the middle, raised-cosine ramps of ``rise`` / ``fall`` samples at the ends (0: no ramp).

    Sample k of a rise of n is ``0.5 - 0.5 cos(pi (k + 0.5) / n)``: strictly positive (a pixel covered by one tile
    never divides by zero), and a fall of n mirrored onto a rise of n sums to exactly 1 at every sample.
    """
    w = torch.ones(length, device=device, dtype=dtype)
    for n, at_start in ((rise, True), (fall, False)):
        if n > 0:
            r = 0.5 - 0.5 * torch.cos(math.pi * (torch.arange(n, device=device, dtype=torch.float64) + 0.5) / n)
            r = r.to(dtype)
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
    if height < tile or width < tile:
        raise ValueError(f"image {height}x{width} is smaller than the tile {tile}: pad it first (pad_to_at_least)")
    ys, xs = tile_starts(height, tile, overlap), tile_starts(width, tile, overlap)

    def ramps(starts: List[int]) -> List[torch.Tensor]:
        # ramp each side over the overlap actually shared with the neighbour on that side (>= the requested one)
        return [ramp(tile, starts[i - 1] + tile - s if i > 0 else 0,
                     s + tile - starts[i + 1] if i + 1 < len(starts) else 0, device, dtype)
                for i, s in enumerate(starts)]

    wys, wxs = ramps(ys), ramps(xs)
    return [Tile(y, x, wy[:, None] * wx[None, :]) for y, wy in zip(ys, wys) for x, wx in zip(xs, wxs)]


def _mirror_pad_1d(x: torch.Tensor, pad: int, dim: int) -> torch.Tensor:
    """Append ``pad`` samples along ``dim`` (-1 or -2) by repeated mirroring (works for any pad, even size 1)."""
    while pad > 0:
        size = x.shape[dim]
        if size == 1:
            reps = [1] * x.dim()
            reps[dim] = pad + 1
            return x.repeat(*reps)
        step = min(pad, size - 1)  # 'reflect' needs pad < size
        spec = (0, step, 0, 0) if dim == -1 else (0, 0, 0, step)
        x = F.pad(x, spec, mode="reflect")
        pad -= step
    return x


def pad_to_at_least(x_B3HW: torch.Tensor, size: int, multiple: int = 1) -> Tuple[torch.Tensor, Tuple[int, int]]:
    """Mirror-pad bottom/right to at least ``size`` and a multiple of ``multiple``; returns (padded, original (H, W))."""
    H, W = x_B3HW.shape[-2:]
    if H == 0 or W == 0:
        raise ValueError(f"empty image {H}x{W}")
    Hp = max(size, math.ceil(H / multiple) * multiple)
    Wp = max(size, math.ceil(W / multiple) * multiple)
    x = _mirror_pad_1d(x_B3HW, Hp - H, -2)
    x = _mirror_pad_1d(x, Wp - W, -1)
    return x, (H, W)


class TileAccumulator:
    """Weighted sum of tile outputs for one image; ``result()`` divides by the summed weights and crops."""

    def __init__(self, padded_hw: Tuple[int, int], out_hw: Tuple[int, int], channels: int = 3,
                 device=None, dtype=torch.float32):
        self.acc = torch.zeros(channels, *padded_hw, device=device, dtype=dtype)
        self.wsum = torch.zeros(1, *padded_hw, device=device, dtype=dtype)
        self.out_hw = out_hw

    def add(self, t: Tile, out_Ctt: torch.Tensor) -> None:
        th, tw = out_Ctt.shape[-2:]
        w = t.weight_yx.to(self.acc.device, self.acc.dtype)
        self.acc[:, t.y:t.y + th, t.x:t.x + tw] += out_Ctt.to(self.acc.device, self.acc.dtype) * w
        self.wsum[:, t.y:t.y + th, t.x:t.x + tw] += w

    def result(self) -> torch.Tensor:
        H, W = self.out_hw
        return (self.acc / self.wsum)[:, :H, :W]


class _Pending:
    """One image in flight: its padded input, the tiles still to run, and the accumulator."""

    def __init__(self, key: Hashable, x_CHW: torch.Tensor, tile: int, overlap: int):
        C, H, W = x_CHW.shape
        self.key = key
        self.dtype = x_CHW.dtype
        self.x_pad = pad_to_at_least(x_CHW[None], tile)[0][0]
        Hp, Wp = self.x_pad.shape[-2:]
        self.tiles = plan_tiles(Hp, Wp, tile, overlap, device=x_CHW.device)
        self.acc = TileAccumulator((Hp, Wp), (H, W), C, device=x_CHW.device)
        self.remaining = len(self.tiles)


def count_tiles(height: int, width: int, tile: int = 256, overlap: int = 32) -> int:
    """Number of model calls (tiles) an image of this size needs."""
    return len(tile_starts(max(height, tile), tile, overlap)) * len(tile_starts(max(width, tile), tile, overlap))


def tiled_forward_stream(fn: TileFn, images: Iterable[Tuple[Hashable, torch.Tensor]], tile: int = 256,
                         overlap: int = 32, batch_size: int = 4,
                         on_batch: Callable[[int], None] | None = None) -> Iterator[Tuple[Hashable, torch.Tensor]]:
    """Restore a stream of ``(key, image (C, H, W))`` of any sizes; yields ``(key, restored (C, H, W))`` in order.

    Tiles of consecutive images share batches of ``batch_size``; images are pulled from ``images`` only when the
    batch needs more tiles, and each result is yielded as soon as its last tile is done, so the caller can save
    it before the next image is read. ``on_batch(n_tiles)`` is called after every model call (progress bars).
    """
    check_tiling_args(tile, overlap, batch_size)
    source = iter(images)
    queue: Deque[Tuple[_Pending, Tile]] = deque()
    in_flight: Deque[_Pending] = deque()  # images not yet yielded, in input order
    exhausted = False
    while True:
        while not exhausted and len(queue) < batch_size:
            try:
                key, x_CHW = next(source)
            except StopIteration:
                exhausted = True
                break
            if x_CHW.dim() != 3:
                raise ValueError(f"expected an image (C, H, W), got shape {tuple(x_CHW.shape)} for {key!r}")
            p = _Pending(key, x_CHW, tile, overlap)
            in_flight.append(p)
            queue.extend((p, t) for t in p.tiles)
        if not queue:
            return
        chunk = [queue.popleft() for _ in range(min(batch_size, len(queue)))]
        inp = torch.stack([p.x_pad[:, t.y:t.y + tile, t.x:t.x + tile] for p, t in chunk])
        out = fn(inp)
        if out.shape[0] != len(chunk) or out.shape[-2:] != inp.shape[-2:]:
            raise RuntimeError(f"restorer returned shape {tuple(out.shape)} for input {tuple(inp.shape)}")
        for (p, t), o in zip(chunk, out):
            p.acc.add(t, o)
            p.remaining -= 1
        if on_batch is not None:
            on_batch(len(chunk))
        while in_flight and in_flight[0].remaining == 0:
            done = in_flight.popleft()
            yield done.key, done.acc.result().to(done.dtype)


def tiled_forward(fn: TileFn, x_B3HW: torch.Tensor, tile: int = 256, overlap: int = 32,
                  batch_size: int = 4) -> torch.Tensor:
    """Apply ``fn`` (fixed ``tile`` x ``tile`` input) to a batch of same-size images of any size; tiles are batched.

    Images of exactly ``tile`` x ``tile`` go through ``fn`` unchanged (a single tile of weight 1).
    """
    check_tiling_args(tile, overlap, batch_size)
    if x_B3HW.dim() != 4:
        raise ValueError(f"expected (B, C, H, W), got shape {tuple(x_B3HW.shape)}")
    B, C, H, W = x_B3HW.shape
    if (H, W) == (tile, tile):  # fast path, same result as one tile of weight 1
        return torch.cat([fn(x_B3HW[i:i + batch_size]) for i in range(0, B, batch_size)]).to(x_B3HW.dtype)
    outs = [o for _, o in tiled_forward_stream(fn, ((b, x_B3HW[b]) for b in range(B)), tile, overlap, batch_size)]
    return torch.stack(outs)
