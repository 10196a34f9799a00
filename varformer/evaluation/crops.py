"""Crops kept during an evaluation for its visual report and for ``varformer compare``, without holding the images.

Per benchmark, as images are scored, three bounded heaps keep (degraded, restored, ground truth) crops of
- the ``k`` worst and the ``k`` best images by PSNR (what ``report.html`` shows), and
- a fixed sample: the ``k`` images with the smallest hash of (benchmark, name). The hash does not depend on the
  restorer, so every run on the same set keeps crops of the same images, and ``compare`` always has some in common.
At most 3 ``k`` crop triplets per benchmark are in memory, whatever the number of images.

The crop window is chosen from the degraded input and the ground truth only (the window where the degradation
|lq - gt| plus the ground truth's detail - its gradient magnitude - is largest, on the 8-bit images, in float64 on
the CPU), so two runs on the same protocol crop the same place.

Written to ``<output_dir>/crops/``: ``<benchmark>/<i>.{lq,out,gt}.png`` and ``index.json`` (for each kept image: its
name, why it was kept, the crop box and the files), swapped in whole when a run is overwritten.
"""
from __future__ import annotations

import hashlib
import heapq
import itertools
import json
import math
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from varformer.data.image_io import tensor_to_uint8, write_image
from varformer.errors import DataError

CROPS_DIR = "crops"
INDEX_FILE = "index.json"
CROP_SIZE = 128        # pixels of the evaluated image (after the protocol's resize)
KEEP_PER_KIND = 4      # worst, best and sample crops per benchmark
CROP_KINDS = ("lq", "out", "gt")


def sample_key(benchmark: str, name: str) -> int:
    """A stable pseudo-random rank of an image (the same in every run and process)."""
    return int.from_bytes(hashlib.sha1(f"{benchmark}/{name}".encode()).digest()[:8], "big")


def choose_box(lq_3HW: np.ndarray, gt_3HW: np.ndarray, size: int) -> Tuple[int, int, int, int]:
    """(top, left, height, width) of the ``size`` window where degradation plus ground-truth detail is largest.
    Inputs are uint8 (3, H, W) arrays; integer sums in float64 make the choice exact on any machine."""
    H, W = gt_3HW.shape[-2:]
    ch, cw = min(size, H), min(size, W)
    if (ch, cw) == (H, W):
        return 0, 0, H, W
    gt = torch.from_numpy(gt_3HW.astype(np.float64))
    lq = torch.from_numpy(lq_3HW.astype(np.float64))
    gray = gt.sum(0)
    score = (lq - gt).abs().sum(0)
    score[:, 1:] += (gray[:, 1:] - gray[:, :-1]).abs()
    score[1:, :] += (gray[1:, :] - gray[:-1, :]).abs()
    stride = max(1, min(ch, cw) // 8)
    # window sums (not means): every window has the same area, and sums of integers are exact
    pooled = F.avg_pool2d(score[None, None], (ch, cw), stride=stride, divisor_override=1)[0, 0]
    idx = int(torch.argmax(pooled))
    return (idx // pooled.shape[1]) * stride, (idx % pooled.shape[1]) * stride, ch, cw


@dataclass
class KeptCrop:
    name: str
    psnr: float
    box: Tuple[int, int, int, int]
    image_hw: Tuple[int, int]
    pixels: Dict[str, np.ndarray]          # "lq" / "out" / "gt" -> (h, w, 3) uint8


@dataclass
class _BenchmarkHeaps:
    worst: List[tuple] = field(default_factory=list)     # (-psnr, -seq, crop): the root is the best of the worst
    best: List[tuple] = field(default_factory=list)      # (psnr, -seq, crop): the root is the worst of the best
    sample: List[tuple] = field(default_factory=list)    # (-hash, -seq, crop): the root has the largest hash


def _wants(heap: List[tuple], key: tuple, k: int) -> bool:
    return len(heap) < k or key > heap[0][:2]


def _push(heap: List[tuple], item: tuple, k: int) -> None:
    if len(heap) < k:
        heapq.heappush(heap, item)
    else:
        heapq.heapreplace(heap, item)


class CropGallery:
    """The bounded crop heaps of one evaluation (see the module doc); ``offer`` each scored image, then ``write``."""

    def __init__(self, keep: int = KEEP_PER_KIND, crop_size: int = CROP_SIZE):
        if keep < 1 or crop_size < 8:
            raise DataError(f"crop gallery needs keep >= 1 and crop size >= 8, got {keep} and {crop_size}")
        self.keep = keep
        self.crop_size = crop_size
        self._heaps: Dict[str, _BenchmarkHeaps] = {}
        self._seq = itertools.count()

    def offer(self, row: Dict[str, object], lq_3HW: torch.Tensor, out_3HW: torch.Tensor,
              gt_3HW: torch.Tensor) -> None:
        """One scored image (``row``: the evaluator's per-image row); its crops are made only if a heap keeps it."""
        bench, name = str(row["benchmark"]), str(row["name"])
        psnr = float(row["psnr"])
        psnr = -math.inf if math.isnan(psnr) else psnr
        heaps = self._heaps.setdefault(bench, _BenchmarkHeaps())
        seq = next(self._seq)
        # ties: the earlier image stays (a larger -seq ranks first in every heap's order)
        keys = {"worst": (-psnr, -seq), "best": (psnr, -seq), "sample": (-sample_key(bench, name), -seq)}
        wanted = [kind for kind, key in keys.items() if _wants(getattr(heaps, kind), key, self.keep)]
        if not wanted:
            return
        crop = self._crop(name, psnr, lq_3HW, out_3HW, gt_3HW)
        for kind in wanted:
            _push(getattr(heaps, kind), keys[kind] + (crop,), self.keep)

    def _crop(self, name: str, psnr: float, lq: torch.Tensor, out: torch.Tensor, gt: torch.Tensor) -> KeptCrop:
        if not (lq.shape == out.shape == gt.shape):
            raise DataError(f"crops of '{name}': degraded {tuple(lq.shape)}, restored {tuple(out.shape)} and ground "
                            f"truth {tuple(gt.shape)} differ in size")
        lq8, gt8 = tensor_to_uint8(lq), tensor_to_uint8(gt)           # (H, W, 3)
        top, left, h, w = choose_box(lq8.transpose(2, 0, 1), gt8.transpose(2, 0, 1), self.crop_size)
        window = (slice(top, top + h), slice(left, left + w))
        pixels = {"lq": lq8[window].copy(), "out": tensor_to_uint8(out[:, window[0], window[1]]),
                  "gt": gt8[window].copy()}
        return KeptCrop(name, psnr, (top, left, h, w), (int(gt.shape[-2]), int(gt.shape[-1])), pixels)

    def ranked(self, benchmark: str) -> Dict[str, List[KeptCrop]]:
        """The kept crops of one benchmark: worst (lowest PSNR first), best (highest first), sample (hash order)."""
        heaps = self._heaps.get(benchmark, _BenchmarkHeaps())
        return {kind: [item[2] for item in sorted(getattr(heaps, kind), reverse=True)]
                for kind in ("worst", "best", "sample")}

    def benchmarks(self) -> List[str]:
        return list(self._heaps)

    def write(self, output_dir: str) -> None:
        """``crops/`` written beside a temporary name, then swapped in whole (an older run's crops go)."""
        os.makedirs(output_dir, exist_ok=True)
        tmp = os.path.join(output_dir, f".crops-{os.getpid()}-{uuid.uuid4().hex[:8]}")  # made with the umask
        os.makedirs(tmp)
        try:
            index = {"crop_size": self.crop_size, "keep": self.keep, "rank_metric": "psnr", "benchmarks": {}}
            for b_i, bench in enumerate(self.benchmarks()):
                index["benchmarks"][bench] = self._write_benchmark(tmp, f"b{b_i}", bench)
            with open(os.path.join(tmp, INDEX_FILE), "w") as fh:
                json.dump(index, fh, indent=1)
            _swap_in(tmp, os.path.join(output_dir, CROPS_DIR))
        finally:
            if os.path.isdir(tmp):
                shutil.rmtree(tmp)

    def _write_benchmark(self, root: str, folder: str, bench: str) -> List[Dict[str, object]]:
        entries: Dict[str, Dict[str, object]] = {}
        for kind, crops in self.ranked(bench).items():
            for rank, crop in enumerate(crops, 1):
                entry = entries.get(crop.name)
                if entry is None:
                    i = len(entries)
                    files = {k: f"{folder}/{i}.{k}.png" for k in CROP_KINDS}
                    for k in CROP_KINDS:
                        write_image(os.path.join(root, files[k]), crop.pixels[k])
                    entry = entries[crop.name] = {"name": crop.name, "kept_as": {}, "box": list(crop.box),
                                                  "image_hw": list(crop.image_hw), "files": files}
                entry["kept_as"][kind] = rank
        return list(entries.values())


def _swap_in(new_dir: str, target: str) -> None:
    if os.path.exists(target):
        # moved aside under a fresh name (rename onto an empty folder), so no file of anyone else's is touched
        old = tempfile.mkdtemp(prefix=".crops-old-", dir=os.path.dirname(target))
        os.replace(target, old)
        os.replace(new_dir, target)
        shutil.rmtree(old)
    else:
        os.replace(new_dir, target)


def read_crop_index(run_dir: str) -> Optional[Dict[str, object]]:
    """A run's ``crops/index.json`` (None when the run kept no crops); file paths made absolute."""
    path = os.path.join(run_dir, CROPS_DIR, INDEX_FILE)
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as fh:
            index = json.load(fh)
        for entries in index["benchmarks"].values():
            for e in entries:
                e["files"] = {k: os.path.join(run_dir, CROPS_DIR, v) for k, v in e["files"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise DataError(f"unreadable crop index {path} ({type(e).__name__}: {e})") from None
    return index
