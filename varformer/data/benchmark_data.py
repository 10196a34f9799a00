"""Test-set datasets: ``benchmark_dataset(name, root)`` yields ``{"lq", "gt", "name", "file"}`` with (3, H, W) float in [0, 1].

Pairs are matched by the dataset's naming rule (``varformer.data.pairing``); unpaired files are an error naming
the first ten (``allow_unpaired=True`` skips them and records it in ``notes``). LQ/GT sizes must agree (SOTS
indoor: GT centre-cropped, its documented 10-pixel border). Gaussian-noise sets add noise on the fly:

- ``seeded`` (ours, default): ``clean + N(0, sigma/255)`` in float, clipped to [0, 1], not quantised; the
  generator is seeded per image from (benchmark, image name, sigma), so every run and every order of access sees
  the same noisy input;
- ``restormer``: NumPy ``seed(0)`` reset per image, float noise, not clipped (Restormer's colour-denoising test);
- ``airnet``: uint8 clean centre-cropped to a multiple of 16, ``+ randn * sigma`` from one NumPy stream seeded 0
  once and consumed in sorted file order, clipped, truncated to uint8 (AirNet/PromptIR/AdaIR; they visit files
  in ``os.listdir`` order, which is filesystem-dependent - sorted order is the reproducible choice).
"""
from __future__ import annotations

import os
import zlib
from typing import Dict, List, Optional

import numpy as np
from torch.utils.data import Dataset

from varformer.data.catalog import Benchmark, Located, get_benchmark, locate
from varformer.data.image_io import read_image, to_tensor
from varformer.data.image_io import image_size
from varformer.data.pairing import PairingResult, describe_unpaired, pair_files
from varformer.data.roots import resolve_root
from varformer.data.sidd import SiddBlocks
from varformer.errors import DataError

NOISE_RULES = ("seeded", "restormer", "airnet")


def noise_seed(benchmark: str, name: str, sigma: float) -> int:
    return zlib.crc32(f"{benchmark}/{name}/{sigma:g}".encode())


def center_crop_multiple(img: np.ndarray, base: int) -> np.ndarray:
    """AirNet's ``crop_img``: centre crop (H, W, ...) to multiples of ``base``."""
    h, w = img.shape[:2]
    ch, cw = h - h % base, w - w % base
    if ch == 0 or cw == 0:
        raise DataError(f"image of {w}x{h} is smaller than the crop multiple {base}")
    y, x = (h - ch) // 2, (w - cw) // 2
    return img[y:y + ch, x:x + cw]


def _center_crop_to(img: np.ndarray, h: int, w: int) -> np.ndarray:
    H, W = img.shape[:2]
    y, x = (H - h) // 2, (W - w) // 2
    return img[y:y + h, x:x + w]


class BenchmarkDataset(Dataset):
    """One located benchmark. ``pairing`` records how pairs were made; ``notes`` what was converted or skipped."""

    def __init__(self, located: Located, allow_unpaired: bool = False, noise_rule: str = "seeded"):
        if noise_rule not in NOISE_RULES:
            raise DataError(f"unknown noise rule '{noise_rule}' (known: {', '.join(NOISE_RULES)})")
        self.located = located
        self.benchmark: Benchmark = located.benchmark
        self.noise_rule = noise_rule
        self.notes: List[str] = []
        self._note_kinds: set = set()
        self._sidd: Optional[SiddBlocks] = None
        self._airnet_cursor = None  # (next index, RandomState) for the sequential AirNet noise stream
        b = self.benchmark
        if located.layout == "sidd .mat":
            self._sidd = SiddBlocks(located.lq_dir)
            names = self._sidd.names()
            self.pairing = PairingResult([(n, n) for n in names], method="sidd-blocks")
        elif b.kind == "clean":
            self.pairing = PairingResult([(f, f) for f in located.lq], method="clean-images")
        else:
            self.pairing = pair_files(located.lq, located.gt, b.rules)
        if not self.pairing.pairs:
            raise DataError(f"{b.name}: no pairs found in {located.folder} (layout {located.layout}; expected "
                            f"{b.layout}). {describe_unpaired(self.pairing)}")
        if self.pairing.note:
            self.notes.append(self.pairing.note)
        if not self.pairing.complete:
            msg = f"{b.name} in {located.folder}: {describe_unpaired(self.pairing)}"
            if not allow_unpaired:
                raise DataError(msg + " (fix the folder, or pass --allow-unpaired to skip these files)")
            self.notes.append("skipped unpaired files: " + msg)

    def __len__(self) -> int:
        return len(self.pairing.pairs)

    def names(self) -> List[str]:
        return [self._name(i) for i in range(len(self))]

    def _name(self, index: int) -> str:
        return os.path.splitext(self.pairing.pairs[index][0])[0]

    def _note(self, kind: str, text: str) -> None:
        if kind not in self._note_kinds:  # one note per kind of conversion, not one per image
            self._note_kinds.add(kind)
            self.notes.append(text)

    def _read(self, folder: str, rel: str) -> np.ndarray:
        path = os.path.join(folder, rel)
        img, note = read_image(path)
        if note:
            self._note(note, f"{note} (first seen: {path})")
        return img

    def _add_noise(self, clean: np.ndarray, index: int, name: str):
        sigma = self.benchmark.sigma
        if self.noise_rule == "seeded":
            rng = np.random.default_rng(noise_seed(self.benchmark.name, name, sigma))
            noisy = clean + rng.normal(0.0, sigma / 255.0, clean.shape).astype(np.float32)
            return np.clip(noisy, 0.0, 1.0), clean
        if self.noise_rule == "restormer":
            np.random.seed(0)
            return clean + np.random.normal(0, sigma / 255.0, clean.shape).astype(np.float32), clean
        # airnet: one stream over the files in order; restart it if an earlier index is asked for
        if self._airnet_cursor is None or self._airnet_cursor[0] > index:
            self._airnet_cursor = (0, np.random.RandomState(0))
        nxt, rs = self._airnet_cursor
        for j in range(nxt, index):  # advance over images not requested (costs one draw per pixel)
            h, w = self._airnet_shape(j)
            rs.randn(h, w, 3)
        clean8 = center_crop_multiple(np.round(clean * 255).astype(np.uint8), 16)
        noisy8 = np.clip(clean8 + rs.randn(*clean8.shape) * sigma, 0, 255).astype(np.uint8)
        self._airnet_cursor = (index + 1, rs)
        return noisy8.astype(np.float32) / 255.0, clean8.astype(np.float32) / 255.0

    def _airnet_shape(self, index: int):
        h, w = image_size(os.path.join(self.located.lq_dir, self.pairing.pairs[index][0]))
        return h - h % 16, w - w % 16

    def load_pair(self, index: int):
        """(lq, gt) as (H, W, 3) float32 numpy in [0, 1] (noise added for the Gaussian sets)."""
        lq_rel, gt_rel = self.pairing.pairs[index]
        name = self._name(index)
        if self._sidd is not None:
            lq8, gt8 = self._sidd.pair(index)
            return lq8.astype(np.float32) / 255.0, gt8.astype(np.float32) / 255.0
        if self.benchmark.kind == "clean":
            return self._add_noise(self._read(self.located.gt_dir, gt_rel), index, name)
        lq = self._read(self.located.lq_dir, lq_rel)
        gt = self._read(self.located.gt_dir, gt_rel)
        if lq.shape != gt.shape:
            (h, w), (H, W) = lq.shape[:2], gt.shape[:2]
            if self.benchmark.size_policy == "center-crop-gt" and H >= h and W >= w:
                self._note("crop-gt", f"{self.benchmark.name}: ground truth centre-cropped to the input size "
                                      f"(e.g. {W}x{H} -> {w}x{h} for {gt_rel})")
                gt = _center_crop_to(gt, h, w)
            else:
                raise DataError(f"{self.benchmark.name}: size mismatch between input "
                                f"{os.path.join(self.located.lq_dir, lq_rel)} ({w}x{h}) and ground truth "
                                f"{os.path.join(self.located.gt_dir, gt_rel)} ({W}x{H})")
        return lq, gt

    def __getitem__(self, index: int) -> Dict[str, object]:
        lq, gt = self.load_pair(index)
        # file: the degraded file's own name (an author's saving step may follow its extension: JPEG for .jpg)
        return {"lq": to_tensor(lq), "gt": to_tensor(gt), "name": self._name(index),
                "file": os.path.basename(self.pairing.pairs[index][0])}


def benchmark_dataset(name: str, root: Optional[str] = None, *, allow_unpaired: bool = False,
                      noise_rule: str = "seeded") -> BenchmarkDataset:
    """A known benchmark under ``root``: any parent folder, the benchmark's own folder, or a named source
    (``varformer.data.roots``). Without a root, the benchmark's default one (``demo-<task>``: the demo set)."""
    bench = get_benchmark(name)
    root = root if root is not None else bench.default_root
    if root is None:
        raise DataError(f"benchmark '{name}' needs a root folder (expected layout: {bench.layout})")
    return BenchmarkDataset(locate(bench.name, resolve_root(root)), allow_unpaired=allow_unpaired,
                            noise_rule=noise_rule)
