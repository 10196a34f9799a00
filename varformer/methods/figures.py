"""What the methods' analysis figures share (``MethodSpec.analyses``, ``varformer analyze``): the image pairs per
task, 2-D projections (t-SNE as the papers draw them, PCA), CSV output and the optional plotting.

Pairs are prepared as the ``paper`` protocol prepares them (LQ and GT bilinear-resized to ``size``, the model's
input size), at most ``max_images`` per task, taken round-robin over that task's benchmarks. The root is a folder
of benchmarks (``varformer data check``) or ``demo`` (the built-in demo set: its ``demo-<task>`` test sets).

Optional dependencies are looked up, never imported, before the compute (``available``): matplotlib draws the
PNGs (without it the CSVs are still written), scikit-learn computes t-SNE (without it, PCA, said in the output).
"""
from __future__ import annotations

import csv
import importlib.util
import io
import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from varformer.data.benchmark_data import benchmark_dataset
from varformer.data.catalog import demo_benchmarks, find_all
from varformer.data.resize import resize_bilinear
from varformer.data.roots import resolve_root
from varformer.errors import ConfigError, DataError
from varformer.files import write_bytes_atomic, write_text_atomic

# one or more sets per task (the analyses cover rain, haze, blur, low light and noise); those found are used
DEFAULT_BENCHMARKS = ("rain100h", "rain100l", "test100", "sots-outdoor", "gopro", "lol", "cbsd68-s25", "sidd-val")
TASK_COLOURS = {"rain": "tab:blue", "haze": "tab:gray", "blur": "tab:orange", "lowlight": "tab:purple",
                "noise": "tab:green", "realnoise": "tab:olive"}
INSTALL = {"matplotlib": "pip install matplotlib",
           "sklearn": "pip install scikit-learn, or pip install -e '.[analysis]'"}
PROJECTIONS = ("tsne", "pca")


@dataclass
class TaskImages:
    task: str
    names: List[str]                 # "<benchmark>/<image>"
    lq: torch.Tensor                 # (N, 3, size, size) in [0, 1]
    gt: torch.Tensor                 # (N, 3, size, size) in [0, 1]


def available(module: str) -> bool:
    """Whether an optional module is installed (looked up, not imported)."""
    return importlib.util.find_spec(module) is not None


def missing_line(module: str, consequence: str) -> str:
    return f"{module} is not installed: {consequence} ({INSTALL.get(module, f'pip install {module}')})"


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


def images_per_task(root: str, benchmarks: Optional[Sequence[str]] = None, max_images: int = 8, size: int = 256,
                    log=print) -> List[TaskImages]:
    """Paper-protocol pairs (``size`` x ``size``) grouped by task, at most ``max_images`` per task."""
    if max_images < 1:
        raise ConfigError(f"--max-images must be >= 1, got {max_images}")
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
                                   resize_bilinear(item["lq"].float(), size).clamp(0, 1),
                                   resize_bilinear(item["gt"].float(), size).clamp(0, 1)))
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


def tsne_2d(features_ND: np.ndarray, seed: int = 0) -> np.ndarray:
    """scikit-learn's t-SNE to 2-D (PCA initialisation, a fixed seed: the same points on every run); the
    perplexity is capped for small sets (it must stay below the number of points)."""
    # optional dependency (scikit-learn): only t-SNE needs it, and callers check ``available('sklearn')`` first
    from sklearn.manifold import TSNE
    n = features_ND.shape[0]
    perplexity = float(min(30.0, max(1.0, (n - 1) / 3)))
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(features_ND)


def projection_to_use(asked: str) -> Tuple[str, Optional[str]]:
    """(the projection that will run, a line saying why it differs from ``asked``, or None)."""
    if asked not in PROJECTIONS:
        raise ConfigError(f"unknown projection '{asked}' (known: {', '.join(PROJECTIONS)})")
    if asked == "tsne" and not available("sklearn"):
        return "pca", missing_line("sklearn", "PCA instead of t-SNE")
    return asked, None


def project_2d(features_ND: np.ndarray, projection: str) -> np.ndarray:
    return tsne_2d(features_ND) if projection == "tsne" else pca_2d(features_ND)


def between_class_fraction(features_ND: np.ndarray, labels: Sequence[str]) -> float:
    """Share of the total variance explained by the class means (0: classes indistinguishable on average)."""
    x = features_ND - features_ND.mean(axis=0, keepdims=True)
    total = float((x ** 2).sum())
    labels = np.asarray(labels)
    between = sum(float((labels == c).sum()) * float((x[labels == c].mean(axis=0) ** 2).sum())
                  for c in np.unique(labels))
    return between / total if total > 0 else 0.0


def write_csv(path: str, rows: List[Dict[str, object]]) -> str:
    """Rows as CSV (floats to 6 significant digits), written atomically."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    for r in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    write_text_atomic(path, buf.getvalue())
    return path


def pyplot():
    """matplotlib's pyplot on the Agg backend (files only, no display needed); callers check
    ``available('matplotlib')`` before their compute."""
    # optional dependency (matplotlib), imported here: it also costs start-up time, and only the figures draw
    import matplotlib  # optional dependency
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt  # optional dependency
    return plt


def save_figure(fig, path: str) -> str:
    """A finished matplotlib figure laid out, written atomically as a PNG and closed (pyplot keeps every open
    figure alive until it is closed)."""
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    pyplot().close(fig)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    write_bytes_atomic(path, buf.getvalue())
    return path
