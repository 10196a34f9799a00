"""What the three analyses share: the weights, the image pairs per task, a 2-D PCA, CSV and figure output.

Pairs are prepared as the ``paper`` protocol prepares them (LQ and GT bilinear-resized to 256x256, the model's
input size), at most ``max_images`` per task, taken round-robin over that task's benchmarks. The root is a folder
of benchmarks (``varformer data check``) or ``demo`` (the built-in demo set: its ``demo-<task>`` test sets).
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from varformer.data.benchmark_data import benchmark_dataset
from varformer.data.catalog import demo_benchmarks, find_all
from varformer.data.resize import resize_bilinear
from varformer.data.roots import resolve_root
from varformer.errors import DataError
from varformer.model import load_varformer

SIZE = 256
# one or more sets per task (the paper's analysis covers rain, haze, blur, low light and noise); those found are used
DEFAULT_BENCHMARKS = ("rain100h", "rain100l", "test100", "sots-outdoor", "gopro", "lol", "cbsd68-s25", "sidd-val")
PATCH_NUMS = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)


@dataclass
class TaskImages:
    task: str
    names: List[str]                 # "<benchmark>/<image>"
    lq: torch.Tensor                 # (N, 3, 256, 256) in [0, 1]
    gt: torch.Tensor                 # (N, 3, 256, 256) in [0, 1]


def load_model(weights: str, device: torch.device) -> torch.nn.Module:
    """Any VarFormer weights file (ours, or the official BasicSR file), float32, eval mode, on ``device``."""
    return load_varformer(weights).to(device).eval()


def _benchmarks_under(folder: str, benchmarks: Optional[Sequence[str]]) -> List[str]:
    if benchmarks:
        return list(benchmarks)
    if os.path.isfile(os.path.join(folder, "manifest.json")):  # the demo set
        return demo_benchmarks()
    found = sorted({loc.benchmark.name for loc in find_all(folder, list(DEFAULT_BENCHMARKS))},
                   key=DEFAULT_BENCHMARKS.index)
    if not found:
        raise DataError(f"no analysis benchmark under {folder} (looked for {', '.join(DEFAULT_BENCHMARKS)}); pass "
                        "--benchmarks, or --root demo for the built-in demo set")
    return found


def images_per_task(root: str, benchmarks: Optional[Sequence[str]] = None, max_images: int = 8,
                    log=print) -> List[TaskImages]:
    """Paper-protocol pairs (256x256) grouped by task, at most ``max_images`` per task."""
    folder = resolve_root(root, log=log)
    names = _benchmarks_under(folder, benchmarks)
    sets = [benchmark_dataset(n, folder) for n in names]
    by_task: Dict[str, list] = {}
    for ds in sets:
        by_task.setdefault(ds.benchmark.task, []).append(ds)
    out = []
    for task, group in by_task.items():
        picked, i = [], 0
        while len(picked) < max_images and any(i < len(ds) for ds in group):
            for ds in group:
                if i < len(ds) and len(picked) < max_images:
                    item = ds[i]
                    picked.append((f"{ds.benchmark.name}/{item['name']}",
                                   resize_bilinear(item["lq"].float(), SIZE).clamp(0, 1),
                                   resize_bilinear(item["gt"].float(), SIZE).clamp(0, 1)))
            i += 1
        out.append(TaskImages(task, [p[0] for p in picked], torch.stack([p[1] for p in picked]),
                              torch.stack([p[2] for p in picked])))
    return out


def batches(n: int, size: int):
    for i in range(0, n, size):
        yield slice(i, min(i + size, n))


def pca_2d(features_ND: np.ndarray) -> np.ndarray:
    """The first two principal components of the rows (centred; SVD), (N, 2)."""
    x = features_ND - features_ND.mean(axis=0, keepdims=True)
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    return u[:, :2] * s[:2]


def between_class_fraction(features_ND: np.ndarray, labels: Sequence[str]) -> float:
    """Share of the total variance explained by the class means (0: classes indistinguishable on average)."""
    x = features_ND - features_ND.mean(axis=0, keepdims=True)
    total = float((x ** 2).sum())
    labels = np.asarray(labels)
    between = sum(float((labels == c).sum()) * float((x[labels == c].mean(axis=0) ** 2).sum())
                  for c in np.unique(labels))
    return between / total if total > 0 else 0.0


def write_csv(path: str, rows: List[Dict[str, object]]) -> str:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        for r in rows:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    return path


def pyplot():
    """matplotlib's pyplot on the Agg backend (files only, no display needed)."""
    # imported here: matplotlib costs start-up time, and only the analysis commands draw
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    return plt


TASK_COLOURS = {"rain": "tab:blue", "haze": "tab:gray", "blur": "tab:orange", "lowlight": "tab:purple",
                "noise": "tab:green", "realnoise": "tab:olive"}
