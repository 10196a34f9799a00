"""Test-set datasets: ``benchmark_dataset(name, root)`` yields ``{"lq", "gt", "name", "file", "gt_gray"}`` with
(3, H, W) float in [0, 1] (``file``: the degraded file's own name; ``gt_gray``: the ground-truth file has one
channel and the ``matlab`` reader keeps it so).

Pairs are matched by the dataset's naming rule (``varformer.data.pairing``); unpaired files are an error naming
the first ten (``allow_unpaired=True`` skips them and records it in ``notes``). LQ/GT sizes must agree (SOTS
indoor: GT centre-cropped, its documented 10-pixel border). Gaussian-noise sets add noise on the fly:

- ``seeded`` (ours, default): ``clean + N(0, sigma/255)`` in float, clipped to [0, 1], not quantised; the
  generator is seeded per image from (benchmark, image name, sigma), so every run and every order of access sees
  the same noisy input;
- ``restormer``: NumPy ``seed(0)`` reset per image, float noise, not clipped (Restormer's colour-denoising test);
- ``airnet``: uint8 clean centre-cropped to a multiple of 16, ``+ randn * sigma`` from one NumPy stream seeded 0
  once, clipped, truncated to uint8. AirNet's ``test.py`` seeds once and then runs sigma 15, 25 and 50 one after
  the other over the whole set, so sigma 25 starts where sigma 15 ended: the stream runs through the set's files in
  sorted order once per sigma, in that order (AirNet visits them in ``os.listdir`` order, which is
  filesystem-dependent - sorted order is the reproducible choice).

Files are read as the preset's authors read them (``lq_reader`` for inputs and clean images, ``gt_reader`` for the
ground truth; ``varformer.data.image_io.read_image_as``). Readers that refuse some files (16-bit or palette files
for MATLAB's ``imread``, anything but 8-bit RGB for RealBlur's script) are checked on every file's header when the
dataset is opened, so a refusal comes before any image is restored.
"""
from __future__ import annotations

import os
import zlib
from typing import Dict, List, Optional

import numpy as np
from torch.utils.data import Dataset

from varformer.data.catalog import Benchmark, Located, get_benchmark, locate
from varformer.data.image_io import header_problem, image_size, read_image_as, reader_refusal, to_tensor
from varformer.data.pairing import PairingResult, describe_unpaired, pair_files
from varformer.data.roots import resolve_root
from varformer.data.sidd import SiddBlocks
from varformer.errors import DataError

NOISE_RULES = ("seeded", "restormer", "airnet")
AIRNET_SIGMAS = (15.0, 25.0, 50.0)  # the order AirNet's test.py runs them in, on one stream
_SKIP_CHUNK = 2 ** 22               # stream draws skipped per call (bounded memory)


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

    def __init__(self, located: Located, allow_unpaired: bool = False, noise_rule: str = "seeded",
                 lq_reader: str = "varformer", gt_reader: str = "varformer"):
        if noise_rule not in NOISE_RULES:
            raise DataError(f"unknown noise rule '{noise_rule}' (known: {', '.join(NOISE_RULES)})")
        self.located = located
        self.benchmark: Benchmark = located.benchmark
        self.noise_rule = noise_rule
        self.lq_reader, self.gt_reader = lq_reader, gt_reader
        self.notes: List[str] = []
        self._note_kinds: set = set()
        self._sidd: Optional[SiddBlocks] = None
        self._airnet_cursor = None  # (stream position in images, RandomState) for AirNet's one noise stream
        self._airnet_sizes: Dict[int, int] = {}
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
        self._skip_unreadable_headers()
        self._check_readers()

    def _skip_unreadable_headers(self) -> None:
        """Pairs with a file whose header cannot be read (corrupt, or a decompression bomb: a header claiming more
        pixels than Pillow decodes) are skipped with a note, found now from the headers (before any restoration);
        the other pairs are evaluated."""
        if self._sidd is not None:
            return
        clean = self.benchmark.kind == "clean"
        keep, bad = [], []
        for pair in self.pairing.pairs:
            paths = [os.path.join(self.located.lq_dir, pair[0])]
            paths += [] if clean else [os.path.join(self.located.gt_dir, pair[1])]
            why = next((p for p in map(header_problem, paths) if p), None)
            if why:
                bad.append(why)
            else:
                keep.append(pair)
        if not bad:
            return
        if not keep:
            raise DataError(f"{self.benchmark.name}: no pair whose images can be read ({bad[0]})")
        self.pairing.pairs = keep
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        self.notes.append(f"skipped {len(bad)} pair(s) whose image cannot be read: {bad[0]}{more}")

    def _check_readers(self) -> None:
        """Every file the readers would refuse, found from the headers now (before any restoration)."""
        if self._sidd is not None:
            return
        checks = [(self.located.lq_dir, 0, self.lq_reader)]
        if self.benchmark.kind != "clean":  # a clean set is one folder, read by the test script (lq_reader)
            checks.append((self.located.gt_dir, 1, self.gt_reader))
        for folder, side, reader in checks:
            if reader in ("varformer", "pil"):
                continue  # they read every file
            for pair in self.pairing.pairs:
                path = os.path.join(folder, pair[side])
                refusal = reader_refusal(path, reader)
                if refusal is not None:
                    raise DataError(f"{self.benchmark.name}: {path}: {refusal}; convert it to 8-bit RGB to evaluate "
                                    f"it under this preset")

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

    def _read(self, folder: str, rel: str, reader: str = "varformer"):
        """(image, one channel on disk kept as one by the reader)."""
        path = os.path.join(folder, rel)
        img, note, gray = read_image_as(path, reader)
        if note:
            self._note(note, f"{note} (first seen: {path})")
        return img, gray

    def _add_noise(self, clean: np.ndarray, index: int, name: str):
        sigma = self.benchmark.sigma
        if self.noise_rule == "seeded":
            rng = np.random.default_rng(noise_seed(self.benchmark.name, name, sigma))
            noisy = clean + rng.normal(0.0, sigma / 255.0, clean.shape).astype(np.float32)
            return np.clip(noisy, 0.0, 1.0), clean
        if self.noise_rule == "restormer":
            np.random.seed(0)
            # float32 image += float64 noise: the sum is formed in float64, stored in float32
            return (clean + np.random.normal(0, sigma / 255.0, clean.shape)).astype(np.float32), clean
        clean8 = center_crop_multiple(np.round(clean * 255).astype(np.uint8), 16)
        noisy8 = np.clip(clean8 + self._airnet_stream_at(index).randn(*clean8.shape) * sigma, 0, 255).astype(np.uint8)
        self._airnet_cursor = (self._airnet_cursor[0] + 1, self._airnet_cursor[1])
        return noisy8.astype(np.float32) / 255.0, clean8.astype(np.float32) / 255.0

    def _airnet_stream_at(self, index: int) -> np.random.RandomState:
        """AirNet's one stream, advanced to where image ``index`` of this sigma draws its noise: past every image
        of the sigmas run before this one (``AIRNET_SIGMAS``) and past the images before it. The stream position
        is kept, so reading in order costs nothing extra; an earlier position restarts it."""
        sigma = self.benchmark.sigma
        if sigma not in AIRNET_SIGMAS:
            raise DataError(f"{self.benchmark.name}: AirNet's test runs sigma 15, 25 and 50 on one noise stream; "
                            f"sigma {sigma:g} is not one of them")
        position = AIRNET_SIGMAS.index(sigma) * len(self) + index  # in images of the stream
        if self._airnet_cursor is None or self._airnet_cursor[0] > position:
            self._airnet_cursor = (0, np.random.RandomState(0))
        done, rs = self._airnet_cursor
        draws = sum(self._airnet_draws(j % len(self)) for j in range(done, position))
        while draws > 0:  # RandomState keeps its cached second Gaussian between calls: chunks = one long call
            rs.randn(min(draws, _SKIP_CHUNK))
            draws -= _SKIP_CHUNK
        self._airnet_cursor = (position, rs)
        return rs

    def _airnet_draws(self, index: int) -> int:
        """Gaussian draws AirNet takes for image ``index``: one per value of its crop to multiples of 16."""
        if index not in self._airnet_sizes:
            h, w = image_size(os.path.join(self.located.lq_dir, self.pairing.pairs[index][0]))
            self._airnet_sizes[index] = (h - h % 16) * (w - w % 16) * 3
        return self._airnet_sizes[index]

    def load_pair(self, index: int):
        """(lq, gt) as (H, W, 3) float32 numpy in [0, 1] (noise added for the Gaussian sets)."""
        return self._load(index)[:2]

    def _load(self, index: int):
        """(lq, gt, gt_gray): ``gt_gray`` when the GT file has one channel and the GT reader keeps it so."""
        lq_rel, gt_rel = self.pairing.pairs[index]
        name = self._name(index)
        if self._sidd is not None:
            lq8, gt8 = self._sidd.pair(index)
            return lq8.astype(np.float32) / 255.0, gt8.astype(np.float32) / 255.0, False
        if self.benchmark.kind == "clean":
            clean, _ = self._read(self.located.gt_dir, gt_rel, self.lq_reader)  # the test script reads it
            return self._add_noise(clean, index, name) + (False,)
        lq, _ = self._read(self.located.lq_dir, lq_rel, self.lq_reader)
        gt, gt_gray = self._read(self.located.gt_dir, gt_rel, self.gt_reader)
        k = self.benchmark.scale
        if lq.shape != gt.shape and not (k > 1 and gt.shape[:2] == (k * lq.shape[0], k * lq.shape[1])):
            (h, w), (H, W) = lq.shape[:2], gt.shape[:2]
            if k > 1:
                raise DataError(f"{self.benchmark.name}: the ground truth {os.path.join(self.located.gt_dir, gt_rel)} "
                                f"({W}x{H}) is not x{k} its input {os.path.join(self.located.lq_dir, lq_rel)} "
                                f"({w}x{h})")
            if self.benchmark.size_policy == "center-crop-gt" and H >= h and W >= w:
                self._note("crop-gt", f"{self.benchmark.name}: ground truth centre-cropped to the input size "
                                      f"(e.g. {W}x{H} -> {w}x{h} for {gt_rel})")
                gt = _center_crop_to(gt, h, w)
            else:
                raise DataError(f"{self.benchmark.name}: size mismatch between input "
                                f"{os.path.join(self.located.lq_dir, lq_rel)} ({w}x{h}) and ground truth "
                                f"{os.path.join(self.located.gt_dir, gt_rel)} ({W}x{H})")
        return lq, gt, gt_gray

    def __getitem__(self, index: int) -> Dict[str, object]:
        lq, gt, gt_gray = self._load(index)
        # file: the degraded file's own name (an author's saving step may follow its extension: JPEG for .jpg)
        return {"lq": to_tensor(lq), "gt": to_tensor(gt), "name": self._name(index),
                "file": os.path.basename(self.pairing.pairs[index][0]), "gt_gray": gt_gray}


def benchmark_dataset(name: str, root: Optional[str] = None, *, allow_unpaired: bool = False,
                      noise_rule: str = "seeded", lq_reader: str = "varformer",
                      gt_reader: str = "varformer") -> BenchmarkDataset:
    """A known benchmark under ``root``: any parent folder, the benchmark's own folder, or a named source
    (``varformer.data.roots``). Without a root, the benchmark's default one (``demo-<task>``: the demo set)."""
    bench = get_benchmark(name)
    root = root if root is not None else bench.default_root
    if root is None:
        raise DataError(f"benchmark '{name}' needs a root folder (expected layout: {bench.layout})")
    return BenchmarkDataset(locate(bench.name, resolve_root(root)), allow_unpaired=allow_unpaired,
                            noise_rule=noise_rule, lq_reader=lq_reader, gt_reader=gt_reader)
