"""Whole images of any size through a restorer: the one path ``varformer restore`` and the evaluator share.

    run = image_run(restorer)                         # the method's defaults: its fit, tile, overlap, window
    for key, y_3HW in restore_stream(restorer, ((name, x_3HW), ...), run): ...   # restore: a stream of images
    y_B3HW = restore_batch(restorer, x_B3HW, run, contexts)                    # evaluate: same-size images

Per image: its context (``Restorer.contexts_of``) from the image as read; the pre-upsampling of a super-resolver
(``traits.upsample``, by ``scale``; skipped when the inputs are already at the output size, ``upsampled=True``: a
protocol resized them); then the network at its resolution, as the method's release runs images of other sizes
(``traits.fit``):

- ``tile``: overlapping tiles of the network's input size blended by a window (``varformer.inference.tiling``;
  ``traits.tile_window``, ``traits.tile_overlap``); tiles of consecutive images share batches;
- ``resize``: the image resized to the input size (PIL Lanczos on the 8-bit image), the network, and its output
  resized back to the image's size times the network's scale (Lanczos again); images share batches.

An image of exactly the input size goes through the network as it is, either way (except the ``gaussian`` tiler,
which pads every image, as its releases do). Any-size restorers (no input size) run on ``tile``-sized tiles.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Hashable, Iterable, Iterator, List, Optional, Sequence, Tuple

import torch

from varformer.data.resize import resize_pil
from varformer.errors import ConfigError
from varformer.inference.restorer import Restorer
from varformer.inference.tiling import WINDOWS, count_tiles, tiled_forward, tiled_forward_stream

FITS = ("tile", "resize")
DEFAULT_OVERLAP = 32
DEFAULT_ANY_SIZE_TILE = 256


@dataclass(frozen=True)
class ImageRun:
    """How whole images meet a restorer's network (``image_run`` fills it from the restorer's traits)."""
    fit: str                    # "tile" | "resize"
    tile: int                   # the network's tile (its fixed input size, or the any-size tile)
    overlap: int                # tile overlap in px at the network's resolution
    window: str                 # "ramp" | "gaussian"
    batch_size: int             # tiles (or resized images) per network call
    upsampled: bool = False     # inputs already at the output size: no pre-upsampling


def image_run(restorer: Restorer, *, fit: Optional[str] = None, tile: Optional[int] = None,
              overlap: Optional[int] = None, window: Optional[str] = None, batch_size: int = 4,
              upsampled: bool = False) -> ImageRun:
    """The run of ``restorer``: its traits' fit, overlap and window unless given; checked in one line each."""
    traits, need = restorer.traits, restorer.input_size
    fit = fit or traits.fit
    if fit not in FITS:
        raise ConfigError(f"unknown fit {fit!r} (known: {', '.join(FITS)})")
    if need is not None and tile is not None and tile != need:
        raise ConfigError(f"this model takes {need}x{need} inputs: use --tile {need} (got {tile})")
    if fit == "resize" and need is None:
        raise ConfigError(f"restorer '{restorer.name}' takes any size: there is no input size to resize to")
    tile = need if need is not None else (tile or DEFAULT_ANY_SIZE_TILE)
    if overlap is None:
        overlap = traits.tile_overlap if traits.tile_overlap is not None else \
            (DEFAULT_OVERLAP if DEFAULT_OVERLAP < tile else tile // 4)
    if not 0 <= overlap < tile:
        raise ConfigError(f"--overlap must be in [0, {tile}) for --tile {tile}, got {overlap}")
    window = window or traits.tile_window
    if window not in WINDOWS:
        raise ConfigError(f"unknown tile window {window!r} (known: {', '.join(WINDOWS)})")
    if batch_size < 1:
        raise ConfigError(f"--batch must be >= 1, got {batch_size}")
    if upsampled and restorer.network_scale != 1:
        raise ConfigError(f"restorer '{restorer.name}' upsamples x{restorer.scale} inside its network: it cannot run "
                          "on inputs already brought to the output size")
    return ImageRun(fit, tile, overlap, window, batch_size, upsampled)


def working_image(restorer: Restorer, x_3HW: torch.Tensor, run: ImageRun) -> torch.Tensor:
    """The image at the network's resolution (pre-upsampled unless the run's inputs already are)."""
    return x_3HW if run.upsampled else restorer.upsampled(x_3HW[None])[0]


def calls_needed(restorer: Restorer, height: int, width: int, run: ImageRun) -> int:
    """Network inputs (tiles or resized images) an image of this size needs: progress bars."""
    s = 1 if run.upsampled else restorer.scale // restorer.network_scale
    h, w = s * height, s * width
    if run.fit == "resize" or (h, w) == (run.tile, run.tile) and run.window == "ramp":
        return 1
    return count_tiles(h, w, run.tile, run.overlap, run.window)


def _resize_back(y_3hw: torch.Tensor, hw: Tuple[int, int]) -> torch.Tensor:
    return y_3hw if tuple(y_3hw.shape[-2:]) == tuple(hw) else resize_pil(y_3hw, hw, "lanczos")


def _resized_batches(restorer: Restorer, items: Iterable[Tuple[Hashable, torch.Tensor, Any]], run: ImageRun,
                     on_batch: Optional[Callable[[int], None]]) -> Iterator[Tuple[Hashable, torch.Tensor]]:
    """``resize``: images squashed to the input size, ``batch_size`` per network call, resized back."""
    S, ns = run.tile, restorer.network_scale
    group: List[Tuple[Hashable, Tuple[int, int], torch.Tensor, Any]] = []

    def flush():
        x = torch.stack([g[2] for g in group])
        y = restorer.network(x, [g[3] for g in group] if restorer.image_context is not None else None)
        if on_batch is not None:
            on_batch(len(group))
        out = [(key, _resize_back(y_i, (ns * hw[0], ns * hw[1]))) for (key, hw, _, _), y_i in zip(group, y)]
        group.clear()
        return out

    for key, x_w, context in items:
        hw = tuple(x_w.shape[-2:])
        x_in = x_w if hw == (S, S) else resize_pil(x_w, (S, S), "lanczos")
        group.append((key, hw, x_in, context))
        if len(group) == run.batch_size:
            yield from flush()
    if group:
        yield from flush()


def restore_stream(restorer: Restorer, images: Iterable[Tuple[Hashable, torch.Tensor]], run: ImageRun,
                   on_batch: Optional[Callable[[int], None]] = None) -> Iterator[Tuple[Hashable, torch.Tensor]]:
    """Restore ``(key, image (3, H, W))`` of any sizes; yields ``(key, restored (3, sH, sW))`` in order, each as
    soon as it is done. ``on_batch(n)`` after every network call (n tiles or images)."""
    with_context = restorer.image_context is not None

    def prepared() -> Iterator[Tuple[Hashable, torch.Tensor, Any]]:
        for key, x_3HW in images:
            context = restorer.contexts_of(x_3HW[None])[0] if with_context else None
            yield key, working_image(restorer, x_3HW, run), context

    if run.fit == "resize":
        yield from _resized_batches(restorer, prepared(), run, on_batch)
        return
    items = prepared() if with_context else ((key, x) for key, x, _ in prepared())
    yield from tiled_forward_stream(restorer.network, items, run.tile, run.overlap, run.batch_size, on_batch,
                                    scale=restorer.network_scale, window=run.window, contexts=with_context)


def restore_batch(restorer: Restorer, x_B3HW: torch.Tensor, run: ImageRun,
                  contexts: Optional[Sequence[Any]] = None) -> torch.Tensor:
    """Same-size images (B, 3, H, W) -> (B, 3, sH, sW); ``contexts``: computed from the images as read (None: from
    these inputs)."""
    if restorer.image_context is not None and contexts is None:
        contexts = restorer.contexts_of(x_B3HW)
    x = x_B3HW if run.upsampled else restorer.upsampled(x_B3HW)
    if run.fit == "resize":
        items = ((i, x[i], contexts[i] if contexts is not None else None) for i in range(x.shape[0]))
        return torch.stack([y for _, y in _resized_batches(restorer, items, run, None)])
    return tiled_forward(restorer.network, x, run.tile, run.overlap, run.batch_size, scale=restorer.network_scale,
                         window=run.window, contexts=contexts)
