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

Options: ``scale`` for networks whose output is ``scale`` times their input (tiles are placed, weighted and
accumulated at the output resolution); ``window="gaussian"``, the tiler of diffusion / VAR super-resolution releases
(DiffBIR's and later ones; a method's traits choose it): the image is reflect-padded by ``overlap`` on every side,
tiles start every ``tile - overlap`` pixels with the last one flush with the end, every tile is weighted by
``w(x, y) = g(x) g(y)``, ``g(x) = exp(-(x - m)^2 / (2 * 0.01 * T^2))`` (``m = (T - 1) / 2``, a variance of 0.01
tile widths, normalised to a maximum of 1) and the padding is cropped off the blended result. ``contexts``: each image
comes with one value (``(key, image, context)``) that every call for its tiles receives (``fn(tiles, contexts)``).
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Callable, Deque, Hashable, Iterable, Iterator, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

TileFn = Callable[..., torch.Tensor]  # (N,3,t,t) in [0,1] [, contexts] -> (N,3,st,st) in [0,1], e.g. a Restorer
WINDOWS = ("ramp", "gaussian")
GAUSSIAN_VARIANCE = 0.01   # in tile widths squared (the SR releases' tilers)


def check_tiling_args(tile: int, overlap: int, batch_size: int = 1, window: str = "ramp", scale: int = 1) -> None:
    if window not in WINDOWS:
        raise ValueError(f"unknown tile window {window!r} (known: {', '.join(WINDOWS)})")
    if scale < 1:
        raise ValueError(f"scale must be >= 1, got {scale}")
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


def stride_starts(size: int, tile: int, overlap: int) -> List[int]:
    """Start offsets of the SR releases' tilers: every ``tile - overlap`` pixels, plus one flush with the end."""
    check_tiling_args(tile, overlap)
    if size <= tile:
        return [0]
    starts = list(range(0, size - tile + 1, tile - overlap))
    if (size - tile) % (tile - overlap):
        starts.append(size - tile)
    return starts


def gaussian_window(length: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """``g(x) = exp(-(x - m)^2 / (2 * 0.01 * length^2))``, ``m = (length - 1) / 2``, normalised to a maximum of 1
    (the 1/sqrt(2 pi 0.01) factor of the releases cancels in the blend)."""
    x = torch.arange(length, dtype=torch.float64)
    g = torch.exp(-((x - (length - 1) / 2) / length) ** 2 / (2 * GAUSSIAN_VARIANCE))
    return (g / g.max()).to(device=device, dtype=dtype)


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
               dtype=torch.float32, window: str = "ramp", scale: int = 1) -> List[Tile]:
    """All tiles covering a (height, width) image already padded to at least ``tile`` on both sides; positions at
    the input resolution, weights at the output's (``scale * tile`` square)."""
    check_tiling_args(tile, overlap, window=window, scale=scale)
    if height < tile or width < tile:
        raise ValueError(f"image {height}x{width} is smaller than the tile {tile}: pad it first (pad_to_at_least)")
    if window == "gaussian":
        g = gaussian_window(scale * tile, device, dtype)
        w = g[:, None] * g[None, :]
        ys, xs = stride_starts(height, tile, overlap), stride_starts(width, tile, overlap)
        return [Tile(y, x, w) for y in ys for x in xs]
    ys, xs = tile_starts(height, tile, overlap), tile_starts(width, tile, overlap)

    def ramps(starts: List[int]) -> List[torch.Tensor]:
        # ramp each side over the overlap actually shared with the neighbour on that side (>= the requested one)
        return [ramp(scale * tile, scale * (starts[i - 1] + tile - s) if i > 0 else 0,
                     scale * (s + tile - starts[i + 1]) if i + 1 < len(starts) else 0, device, dtype)
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


def reflect_pad(x_B3HW: torch.Tensor, pad: int) -> torch.Tensor:
    """Mirror ``pad`` samples onto every side (``F.pad(mode="reflect")``, repeated for images of ``pad`` or fewer
    pixels)."""
    for dim in (-2, -1):
        x_B3HW = _mirror_pad_1d(x_B3HW, pad, dim)
        x_B3HW = _mirror_pad_1d(x_B3HW.flip(dim), pad, dim).flip(dim)
    return x_B3HW


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
    """Weighted sum of tile outputs for one image; ``result()`` divides by the summed weights and crops. Sizes and
    ``border`` (padding at the top and left) are at the input resolution; the sums at ``scale`` times it."""

    def __init__(self, padded_hw: Tuple[int, int], out_hw: Tuple[int, int], channels: int = 3,
                 device=None, dtype=torch.float32, scale: int = 1, border: int = 0):
        hw = (scale * padded_hw[0], scale * padded_hw[1])
        self.acc = torch.zeros(channels, *hw, device=device, dtype=dtype)
        self.wsum = torch.zeros(1, *hw, device=device, dtype=dtype)
        self.out_hw, self.scale, self.border = out_hw, scale, border

    def add(self, t: Tile, out_Ctt: torch.Tensor) -> None:
        th, tw = out_Ctt.shape[-2:]
        y, x = self.scale * t.y, self.scale * t.x
        w = t.weight_yx.to(self.acc.device, self.acc.dtype)
        self.acc[:, y:y + th, x:x + tw] += out_Ctt.to(self.acc.device, self.acc.dtype) * w
        self.wsum[:, y:y + th, x:x + tw] += w

    def result(self) -> torch.Tensor:
        s, b = self.scale, self.scale * self.border
        H, W = self.out_hw
        return (self.acc / self.wsum)[:, b:b + s * H, b:b + s * W]


def padded_input(x_B3HW: torch.Tensor, tile: int, overlap: int, window: str = "ramp") -> Tuple[torch.Tensor, int]:
    """(the image as tiled: ``ramp`` mirror-pads bottom/right up to a tile, ``gaussian`` reflect-pads every side by
    the overlap first; the padding at the top and left)."""
    border = overlap if window == "gaussian" else 0
    x = reflect_pad(x_B3HW, border) if border else x_B3HW
    return pad_to_at_least(x, tile)[0], border


class _Pending:
    """One image in flight: its padded input, its context, the tiles still to run, and the accumulator."""

    def __init__(self, key: Hashable, x_CHW: torch.Tensor, tile: int, overlap: int, window: str, scale: int,
                 context=None):
        C, H, W = x_CHW.shape
        self.key, self.context = key, context
        self.dtype = x_CHW.dtype
        x_pad, border = padded_input(x_CHW[None], tile, overlap, window)
        self.x_pad = x_pad[0]
        Hp, Wp = self.x_pad.shape[-2:]
        self.tiles = plan_tiles(Hp, Wp, tile, overlap, device=x_CHW.device, window=window, scale=scale)
        self.acc = TileAccumulator((Hp, Wp), (H, W), C, device=x_CHW.device, scale=scale, border=border)
        self.remaining = len(self.tiles)


def count_tiles(height: int, width: int, tile: int = 256, overlap: int = 32, window: str = "ramp") -> int:
    """Number of model calls (tiles) an image of this size needs."""
    if window == "gaussian":
        h, w = max(height + 2 * overlap, tile), max(width + 2 * overlap, tile)
        return len(stride_starts(h, tile, overlap)) * len(stride_starts(w, tile, overlap))
    return len(tile_starts(max(height, tile), tile, overlap)) * len(tile_starts(max(width, tile), tile, overlap))


def tiled_forward_stream(fn: TileFn, images: Iterable[tuple], tile: int = 256, overlap: int = 32,
                         batch_size: int = 4, on_batch: Callable[[int], None] | None = None, *, scale: int = 1,
                         window: str = "ramp", contexts: bool = False) -> Iterator[Tuple[Hashable, torch.Tensor]]:
    """Restore a stream of ``(key, image (C, H, W))`` (``contexts``: ``(key, image, context)``) of any sizes; yields
    ``(key, restored (C, scale*H, scale*W))`` in order.

    Tiles of consecutive images share batches of ``batch_size``; images are pulled from ``images`` only when the
    batch needs more tiles, and each result is yielded as soon as its last tile is done, so the caller can save
    it before the next image is read. ``on_batch(n_tiles)`` is called after every model call (progress bars).
    """
    check_tiling_args(tile, overlap, batch_size, window, scale)
    source = iter(images)
    queue: Deque[Tuple[_Pending, Tile]] = deque()
    in_flight: Deque[_Pending] = deque()  # images not yet yielded, in input order
    exhausted = False
    while True:
        while not exhausted and len(queue) < batch_size:
            try:
                item = next(source)
            except StopIteration:
                exhausted = True
                break
            key, x_CHW, context = item if contexts else (*item, None)
            if x_CHW.dim() != 3:
                raise ValueError(f"expected an image (C, H, W), got shape {tuple(x_CHW.shape)} for {key!r}")
            p = _Pending(key, x_CHW, tile, overlap, window, scale, context)
            in_flight.append(p)
            queue.extend((p, t) for t in p.tiles)
        if not queue:
            return
        chunk = [queue.popleft() for _ in range(min(batch_size, len(queue)))]
        inp = torch.stack([p.x_pad[:, t.y:t.y + tile, t.x:t.x + tile] for p, t in chunk])
        out = fn(inp, [p.context for p, _ in chunk]) if contexts else fn(inp)
        if out.shape[0] != len(chunk) or out.shape[-2:] != (scale * tile, scale * tile):
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
                  batch_size: int = 4, *, scale: int = 1, window: str = "ramp",
                  contexts: Optional[Sequence] = None) -> torch.Tensor:
    """Apply ``fn`` (fixed ``tile`` x ``tile`` input) to a batch of same-size images of any size; tiles are batched.
    ``contexts``: one value per image, passed with its tiles (``fn(tiles, contexts)``).

    With the ``ramp`` window, images of exactly ``tile`` x ``tile`` go through ``fn`` unchanged (a single tile of
    weight 1; the ``gaussian`` tiler pads them and runs four tiles, as the releases do).
    """
    check_tiling_args(tile, overlap, batch_size, window, scale)
    if x_B3HW.dim() != 4:
        raise ValueError(f"expected (B, C, H, W), got shape {tuple(x_B3HW.shape)}")
    B, C, H, W = x_B3HW.shape
    if contexts is not None and len(contexts) != B:
        raise ValueError(f"expected {B} contexts (one per image), got {len(contexts)}")
    if (H, W) == (tile, tile) and window == "ramp":  # fast path, same result as one tile of weight 1
        call = (lambda i: fn(x_B3HW[i:i + batch_size], list(contexts[i:i + batch_size]))) if contexts is not None \
            else (lambda i: fn(x_B3HW[i:i + batch_size]))
        return torch.cat([call(i) for i in range(0, B, batch_size)]).to(x_B3HW.dtype)
    items = ((b, x_B3HW[b], contexts[b]) if contexts is not None else (b, x_B3HW[b]) for b in range(B))
    outs = [o for _, o in tiled_forward_stream(fn, items, tile, overlap, batch_size, scale=scale, window=window,
                                               contexts=contexts is not None)]
    return torch.stack(outs)
