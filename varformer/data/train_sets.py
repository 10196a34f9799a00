"""Training data: the official stage-2 task mixture, stage-1 clean images, paired crops.

Determinism: every random choice of a sample (task, image, crop, flip, degradation seed) is drawn from a
generator seeded by ``(seed, sample_id)``; the sampler (``varformer.training.sampling``) decides which ids each
process sees, so the data do not depend on the number of DataLoader workers.

Stage 2 (docs/official-differences.md): six sources, each drawn with probability 1/6 per sample by default (the
official YAML's ``weights`` key never reaches the dataset: intent = equal), then a uniformly random pair inside
it; random ``crop_size`` crops; official flips/rotations off. Small-image rule (official default): a training
pair whose GT is smaller than the crop on a side is resized to ``crop x crop`` (bilinear) and its LQ is *replaced
by the GT* (an identity pair); ``small_images="resize-both"`` resizes LQ and GT instead (keeps the degradation;
our alternative).

Stage 1: clean images as LQ and GT with random 256 crops (the evident intent of the official stage-1 recipe,
whose published YAML does not crop), or degraded on the fly with ``varformer.data.degradations``.

RestoreVAR (both stages): the same task mixture over haze, rain, snow, low light and motion blur, equal task
probabilities (its sampler weights each item by 1 / count of its degradation), with ``resize_short``: both images
first resized so the short side is 576 (Lanczos), then one random 512 crop at the same place, no flips.

Roots are folders or named sources (``varformer.data.roots``: ``demo:train`` is the demo set's training split
in the generic ``<task>/{input,target}`` layout, ``demo:train/clean`` its clean images).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset

from varformer.data.catalog import list_images
from varformer.data.degradations import DEGRADATIONS
from varformer.data.image_io import is_image_file, read_image, to_tensor
from varformer.data.pairing import describe_unpaired, pair_files
from varformer.data.roots import resolve_root
from varformer.errors import DataError

SMALL_IMAGE_RULES = ("official", "resize-both")

# task -> candidate (LQ folder, GT folder, pairing rules) relative to the training root; the first is the
# official stage-2 YAML's, the others the layouts of the archives people download (docs/evaluation.md, "Data layouts")
TRAIN_LAYOUTS: Dict[str, List[Tuple[str, str, Tuple[str, ...]]]] = {
    "blur": [("GoPro/train/input", "GoPro/train/groundtruth", ("stem",)),
             ("GOPRO_Large/train/*/blur", "GOPRO_Large/train/*/sharp", ("sequence-frame",)),
             ("train/GoPro/input", "train/GoPro/target", ("stem",)),
             ("train/GoPro/input_crops", "train/GoPro/target_crops", ("stem",))],
    "lowlight": [("LOLdataset/our485/low", "LOLdataset/our485/high", ("stem",)),
                 ("LOL/train/low", "LOL/train/high", ("stem",)), ("Train/Enhance/low", "Train/Enhance/gt", ("stem",))],
    "realnoise": [("SIDD/train/input", "SIDD/train/target", ("stem",)),
                  ("train/SIDD/input_crops", "train/SIDD/target_crops", ("stem",))],
    "rain": [("rain13k/train/input", "rain13k/train/target", ("stem",)),
             ("train/Rain13K/input", "train/Rain13K/target", ("stem",)),
             ("Train/Derain/rainy", "Train/Derain/gt", ("rain-norain", "stem"))],
    "noise": [("WED_BSD400/g_noise", "WED_BSD400/gt", ("stem",))],
    "haze": [("RESIDE2/OTS_ALPHA2/haze/OTS", "RESIDE2/OTS_ALPHA2/clear/clear_images", ("haze-prefix", "stem")),
             ("RESIDE/OTS_ALPHA/haze/OTS", "RESIDE/OTS_ALPHA/clear/clear_images", ("haze-prefix", "stem")),
             ("Train/Dehaze/synthetic", "Train/Dehaze/original", ("haze-prefix", "stem"))],
    "snow": [],
}
# RestoreVAR's training data archive (its valset.json paths, ``data/<degradation>/<dataset>/Train/{input,GT}``),
# tried after the layouts above; point data.root at its ``data/`` folder
PER_DEGRADATION_LAYOUTS: Dict[str, Tuple[str, str, Tuple[str, ...]]] = {
    "haze": ("Haze/RESIDE/Train/hazy", "Haze/RESIDE/Train/GT", ("haze-prefix", "stem")),
    "snow": ("Snow/Snow100k/Train/Snow", "Snow/Snow100k/Train/GT", ("stem",)),
    "rain": ("Rain/Rain13K/Train/Rain", "Rain/Rain13K/Train/GT", ("stem",)),
    "lowlight": ("Low-light/LOLv1/Train/Low", "Low-light/LOLv1/Train/GT", ("stem",)),
    "blur": ("Motion blur/GoPro/Train/Blur", "Motion blur/GoPro/Train/GT", ("stem",)),
}
for _task, _layout in PER_DEGRADATION_LAYOUTS.items():
    TRAIN_LAYOUTS[_task].append(_layout)
# "*" stands for per-sequence folders (the original GoPro release); every task also accepts the generic
# <root>/<task>/{input,target} layout (the demo set's training split)
GENERIC_LAYOUT = ("{task}/input", "{task}/target", ("stem", "haze-prefix", "rain-norain"))


@dataclass
class PairedSource:
    task: str
    lq_dir: str
    gt_dir: str
    pairs: List[Tuple[str, str]]
    note: str = ""

    def __len__(self) -> int:
        return len(self.pairs)


def _list_recursive(folder: str) -> List[str]:
    out = []
    for dirpath, dirnames, files in os.walk(folder):
        dirnames.sort()
        out += [os.path.relpath(os.path.join(dirpath, f), folder) for f in files if is_image_file(f)]
    return sorted(out)


def find_training_source(root: str, task: str) -> PairedSource:
    """The paired training folders of ``task`` under ``root``; ``DataError`` lists the layouts looked for."""
    if task not in TRAIN_LAYOUTS:
        raise DataError(f"unknown training task '{task}' (known: {', '.join(TRAIN_LAYOUTS)})")
    tried = []
    for lq_rel, gt_rel, rules in TRAIN_LAYOUTS[task] + [tuple(s.format(task=task) if isinstance(s, str) else s
                                                               for s in GENERIC_LAYOUT)]:
        tried.append(f"{lq_rel} + {gt_rel}")
        if "/*/" in lq_rel:  # <base>/<sequence>/<lq sub> and <base>/<sequence>/<gt sub>
            base, lq_sub = lq_rel.split("/*/")
            gt_sub = gt_rel.split("/*/")[1]
            lq_dir = gt_dir = os.path.join(root, base)
            if not os.path.isdir(lq_dir):
                continue
            seqs = sorted(d for d in os.listdir(lq_dir) if os.path.isdir(os.path.join(lq_dir, d, lq_sub)))
            lq = [f"{q}/{lq_sub}/{f}" for q in seqs for f in list_images(os.path.join(lq_dir, q, lq_sub))]
            gt = [f"{q}/{gt_sub}/{f}" for q in seqs if os.path.isdir(os.path.join(lq_dir, q, gt_sub))
                  for f in list_images(os.path.join(lq_dir, q, gt_sub))]
            if not lq:
                continue
        else:
            lq_dir, gt_dir = os.path.join(root, lq_rel), os.path.join(root, gt_rel)
            if not (os.path.isdir(lq_dir) and os.path.isdir(gt_dir)):
                continue
            lq, gt = _list_recursive(lq_dir), _list_recursive(gt_dir)
        res = pair_files(lq, gt, rules)
        if not res.pairs:
            raise DataError(f"training task '{task}': no pairs in {lq_dir} / {gt_dir}. {describe_unpaired(res)}")
        if res.unpaired_lq:
            raise DataError(f"training task '{task}': {describe_unpaired(res)} (in {lq_dir} / {gt_dir})")
        return PairedSource(task, lq_dir, gt_dir, res.pairs, res.note)
    raise DataError(f"training task '{task}': none of the expected layouts exists under {root}. "
                    f"Looked for: {'; '.join(tried)}")


# ---------------------------------------------------------------------------------------------------------------
# Crops and augmentation (identical for LQ and GT)
# ---------------------------------------------------------------------------------------------------------------
def _resize_to(img: np.ndarray, size: int) -> np.ndarray:
    x = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))[None]
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=False)
    return x[0].numpy().transpose(1, 2, 0)


def paired_random_crop(lq: np.ndarray, gt: np.ndarray, size: int, rng: np.random.Generator,
                       small_images: str = "official") -> Tuple[np.ndarray, np.ndarray]:
    """Same random ``size`` x ``size`` window from LQ and GT (both (H, W, 3)); small-image rule in module doc."""
    if lq.shape != gt.shape:
        raise DataError(f"training pair sizes differ: LQ {lq.shape[1]}x{lq.shape[0]} vs GT {gt.shape[1]}x{gt.shape[0]}")
    h, w = gt.shape[:2]
    if h < size or w < size:
        if small_images == "official":
            gt = _resize_to(gt, size)
            return gt.copy(), gt
        return _resize_to(lq, size), _resize_to(gt, size)
    y = int(rng.integers(0, h - size + 1))
    x = int(rng.integers(0, w - size + 1))
    return lq[y:y + size, x:x + size], gt[y:y + size, x:x + size]


def resize_short_side(img: np.ndarray, short: int) -> np.ndarray:
    """Resize an (H, W, 3) float image so its short side is ``short`` (PIL Lanczos on the 8-bit image, the long side
    ``int(short * long / short_now)`` as torchvision's ``Resize(int)`` computes it): RestoreVAR's training resize."""
    h, w = img.shape[:2]
    if min(h, w) == short:
        return img
    new_w, new_h = (short, int(short * h / w)) if w <= h else (int(short * w / h), short)
    u8 = Image.fromarray(np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8))
    return np.asarray(u8.resize((new_w, new_h), Image.LANCZOS), dtype=np.float32) / 255.0


def paired_augment(lq: np.ndarray, gt: np.ndarray, rng: np.random.Generator, flip: bool, rot90: bool):
    """Horizontal flip and k x 90 degree rotation, drawn once and applied to both images."""
    if flip and rng.random() < 0.5:
        lq, gt = lq[:, ::-1], gt[:, ::-1]
    if rot90:
        k = int(rng.integers(0, 4))
        lq, gt = np.rot90(lq, k), np.rot90(gt, k)
    return np.ascontiguousarray(lq), np.ascontiguousarray(gt)


def sample_rng(seed: int, sample_id: int) -> np.random.Generator:
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, int(sample_id)])


# ---------------------------------------------------------------------------------------------------------------
# Datasets (indexed by sample id, any non-negative integer; __len__ is one nominal epoch)
# ---------------------------------------------------------------------------------------------------------------
TASK_ORDERS = ("random", "cycle")


class TaskMixtureDataset(Dataset):
    """Stage 2: a task, then a uniform pair of that task, then a paired crop.

    ``task_order='random'`` (official) draws the task by ``task_weights``; ``'cycle'`` gives sample id ``k`` task
    ``k mod n_tasks`` (equal weights only), so consecutive ids, i.e. a batch or a log window read with an
    unshuffled sampler, cover every task equally: lower-variance steps for short runs such as the demo."""
    unbounded_ids = True  # any non-negative sample id: it seeds the sample (varformer.training.sampling)

    def __init__(self, sources: Sequence[PairedSource], task_weights: Optional[Sequence[float]] = None,
                 crop_size: int = 256, flip: bool = False, rot90: bool = False, seed: int = 0,
                 small_images: str = "official", task_order: str = "random", resize_short: int = 0):
        if not sources:
            raise DataError("the training mixture needs at least one task")
        if small_images not in SMALL_IMAGE_RULES:
            raise DataError(f"small_images must be one of {SMALL_IMAGE_RULES}, got '{small_images}'")
        if task_order not in TASK_ORDERS:
            raise DataError(f"task order must be one of {TASK_ORDERS}, got '{task_order}'")
        weights = list(task_weights or [])
        if task_order == "cycle" and weights and len(set(weights)) > 1:
            raise DataError(f"task_order 'cycle' gives every task the same share; it cannot honour task weights "
                            f"{weights} (use task_order 'random', or no weights)")
        if not weights:
            weights = [1.0] * len(sources)
        if len(weights) != len(sources):
            raise DataError(f"{len(weights)} task weights for {len(sources)} tasks "
                            f"({', '.join(s.task for s in sources)}); give one weight per task or none")
        if any(w < 0 for w in weights) or sum(weights) <= 0:
            raise DataError(f"task weights must be >= 0 with a positive sum, got {weights}")
        self.sources = list(sources)
        self.tasks = [s.task for s in sources]
        self.probs = np.asarray(weights, dtype=np.float64) / float(sum(weights))
        self.crop_size, self.flip, self.rot90, self.seed = crop_size, flip, rot90, seed
        self.small_images, self.task_order = small_images, task_order
        if resize_short and resize_short < crop_size:
            raise DataError(f"resize_short {resize_short} is below the crop size {crop_size}")
        self.resize_short = resize_short

    def __len__(self) -> int:
        return sum(len(s) for s in self.sources)

    def __getitem__(self, sample_id: int) -> Dict[str, object]:
        rng = sample_rng(self.seed, sample_id)
        if self.task_order == "cycle":
            t = sample_id % len(self.sources)
        else:
            t = int(rng.choice(len(self.sources), p=self.probs))
        src = self.sources[t]
        lq_rel, gt_rel = src.pairs[int(rng.integers(0, len(src)))]
        lq, _ = read_image(os.path.join(src.lq_dir, lq_rel))
        gt, _ = read_image(os.path.join(src.gt_dir, gt_rel))
        if lq.shape != gt.shape:
            raise DataError(f"training task '{src.task}': size mismatch between {os.path.join(src.lq_dir, lq_rel)} "
                            f"({lq.shape[1]}x{lq.shape[0]}) and {os.path.join(src.gt_dir, gt_rel)} "
                            f"({gt.shape[1]}x{gt.shape[0]})")
        if self.resize_short:
            lq, gt = resize_short_side(lq, self.resize_short), resize_short_side(gt, self.resize_short)
        lq, gt = paired_random_crop(lq, gt, self.crop_size, rng, self.small_images)
        lq, gt = paired_augment(lq, gt, rng, self.flip, self.rot90)
        return {"lq": to_tensor(lq), "gt": to_tensor(gt), "task": src.task, "task_id": t,
                "name": os.path.splitext(lq_rel)[0]}


class CleanImageDataset(Dataset):
    """Stage 1: clean images as GT; LQ = GT (official) or degraded on the fly by one of ``degrade_tasks``."""
    unbounded_ids = True  # any non-negative sample id: it seeds the sample (varformer.training.sampling)

    def __init__(self, files: Sequence[str], crop_size: int = 256, flip: bool = False, rot90: bool = False,
                 seed: int = 0, degrade_tasks: Sequence[str] = ()):
        if not files:
            raise DataError("stage-1 data: no clean images")
        self.files = list(files)
        self.crop_size, self.flip, self.rot90, self.seed = crop_size, flip, rot90, seed
        self.degrade_tasks = list(degrade_tasks)
        if self.degrade_tasks:
            unknown = [t for t in self.degrade_tasks if t not in DEGRADATIONS]
            if unknown:
                raise DataError(f"unknown degradations {unknown} (known: {', '.join(sorted(DEGRADATIONS))})")

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, sample_id: int) -> Dict[str, object]:
        rng = sample_rng(self.seed, sample_id)
        path = self.files[sample_id % len(self.files)]
        img, _ = read_image(path)
        _, gt = paired_random_crop(img, img, self.crop_size, rng, "official")
        gt, _ = paired_augment(gt, gt, rng, self.flip, self.rot90)
        task = "clean"
        lq = gt
        if self.degrade_tasks:
            task = self.degrade_tasks[int(rng.integers(0, len(self.degrade_tasks)))]
            lq = np.clip(DEGRADATIONS[task](gt, seed=int(rng.integers(0, 2**31 - 1))), 0, 1).astype(np.float32)
        return {"lq": to_tensor(lq), "gt": to_tensor(gt), "task": task,
                "task_id": -1, "name": os.path.splitext(os.path.basename(path))[0]}


# ---------------------------------------------------------------------------------------------------------------
# Constructors used by training (values from DataConfig passed explicitly)
# ---------------------------------------------------------------------------------------------------------------
def build_stage2_dataset(root: str, tasks: Sequence[str], task_weights: Sequence[float] = (), crop_size: int = 256,
                         flip: bool = False, rot90: bool = False, seed: int = 0,
                         small_images: str = "official", task_order: str = "random",
                         resize_short: int = 0) -> TaskMixtureDataset:
    if not root or not os.path.isdir(root):
        raise DataError(f"training data root not found: {root!r} (expected the official layout, e.g. "
                        f"<root>/GoPro/train/{{input,groundtruth}}, <root>/rain13k/train/{{input,target}}, ...; "
                        f"or data.root=demo:train for the built-in demo set)")
    sources = [find_training_source(root, t) for t in tasks]
    return TaskMixtureDataset(sources, task_weights, crop_size, flip, rot90, seed, small_images, task_order,
                              resize_short)


def build_stage1_dataset(root: str, crop_size: int = 256, flip: bool = False, rot90: bool = False, seed: int = 0,
                         degrade_tasks: Sequence[str] = ()) -> CleanImageDataset:
    """All images under ``root`` (recursively; e.g. DF2K HR) as clean training images."""
    if not root or not os.path.isdir(root):
        raise DataError(f"stage-1 data root not found: {root!r} (expected a folder of clean images, e.g. DF2K HR)")
    files = [os.path.join(root, f) for f in _list_recursive(root)]
    if not files:
        raise DataError(f"stage-1 data: no images under {root}")
    return CleanImageDataset(files, crop_size, flip, rot90, seed, degrade_tasks)


def build_training_dataset(data_cfg, stage: int, seed: int, task_order: str = "random") -> Dataset:
    """Dataset for ``stage`` (1 or 2) from a ``DataConfig`` (``varformer.config``); ``data_cfg.root`` is a folder
    or a named source (``varformer.data.roots``)."""
    if stage not in (1, 2):
        raise DataError(f"stage must be 1 or 2, got {stage}")
    if not data_cfg.root:
        raise DataError("data.root is not set: point it at the training data (official layouts), or use "
                        "data.root=demo:train (stage 2) / demo:train/clean (stage 1) for the built-in demo set")
    root = resolve_root(data_cfg.root)
    common = dict(crop_size=data_cfg.crop_size, flip=data_cfg.flip, rot90=data_cfg.rot90, seed=seed)
    if stage == 1:
        return build_stage1_dataset(root, **common)
    return build_stage2_dataset(root, list(data_cfg.tasks), list(data_cfg.task_weights), **common,
                                task_order=task_order, resize_short=int(getattr(data_cfg, "resize_short", 0)))
