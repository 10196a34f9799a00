"""Scale replacement: which VAR scales carry which degradation (the paper's finding: the coarse scales carry global
degradations such as haze and low light, the fine scales local ones such as noise and rain).

For each pair, both images are tokenised by the frozen VQVAE (ten index maps, 1x1 ... 16x16). The degraded image's
tokens at the ``k`` coarsest scales (or the ``k`` finest) are replaced by the clean image's, the mixture is decoded,
and PSNR against the clean image is measured (``paper`` protocol metrics: RGB, crop 4, 8-bit). ``k = 0`` is the
degraded image's own reconstruction, ``k = 10`` the clean image's; a curve per task and direction. A task whose
coarse curve rises first is carried by the coarse scales.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict, List

import numpy as np
import torch

from varformer.analysis.common import PATCH_NUMS, TASK_COLOURS, TaskImages, batches, pyplot, write_csv
from varformer.metrics import psnr

DIRECTIONS = ("coarse", "fine")


def mixed_tokens(idx_lq: List[torch.Tensor], idx_gt: List[torch.Tensor], k: int, direction: str
                 ) -> List[torch.Tensor]:
    """The degraded image's index maps with the ``k`` coarsest (``direction='coarse'``) or finest scales taken
    from the clean image's."""
    n = len(idx_lq)
    take_gt = range(k) if direction == "coarse" else range(n - k, n)
    return [idx_gt[i] if i in take_gt else idx_lq[i] for i in range(n)]


@dataclass
class ScaleReplacementResult:
    png: str
    csv: str
    curves: Dict[str, Dict[str, List[float]]]      # task -> direction -> PSNR for k = 0..10


def scale_replacement_analysis(vae, tasks: List[TaskImages], out_dir: str, batch_size: int = 4
                               ) -> ScaleReplacementResult:
    device = next(vae.parameters()).device
    n_scales = len(vae.patch_nums)
    curves: Dict[str, Dict[str, List[float]]] = {}
    rows = []
    for t in tasks:
        sums = {d: np.zeros(n_scales + 1) for d in DIRECTIONS}
        for sl in batches(len(t.names), batch_size):
            lq, gt = t.lq[sl].to(device), t.gt[sl].to(device)
            with torch.inference_mode():
                idx_lq, idx_gt = vae.img_to_indices(lq * 2 - 1), vae.img_to_indices(gt * 2 - 1)
                # k = 0 and k = n_scales are the same mixture in both directions: decode them once
                mixes = [(d, k) for d in DIRECTIONS for k in range(n_scales + 1)
                         if d == DIRECTIONS[0] or 0 < k < n_scales]
                scores = {}
                for chunk in batches(len(mixes), max(1, batch_size // lq.shape[0])):
                    idx = [mixed_tokens(idx_lq, idx_gt, k, d) for d, k in mixes[chunk]]
                    img = vae.indices_to_img([torch.cat(per_scale) for per_scale in zip(*idx)]).add(1).mul(0.5)
                    values = psnr(img, gt.repeat(len(idx), 1, 1, 1), crop_border=4).view(len(idx), -1).sum(1)
                    scores.update(zip(mixes[chunk], values.tolist()))
                for d in DIRECTIONS:
                    for k in range(n_scales + 1):
                        sums[d][k] += scores.get((d, k), scores.get((DIRECTIONS[0], k)))
        curves[t.task] = {d: list(sums[d] / len(t.names)) for d in DIRECTIONS}
        for d in DIRECTIONS:
            for k in range(n_scales + 1):
                scales = PATCH_NUMS[:k] if d == "coarse" else PATCH_NUMS[n_scales - k:]
                rows.append({"task": t.task, "images": len(t.names), "replaced": d, "k": k,
                             "scales": " ".join(map(str, scales)) or "-", "psnr": curves[t.task][d][k]})
    os.makedirs(out_dir, exist_ok=True)
    png = os.path.join(out_dir, "scale_replacement.png")
    _plot(curves, n_scales, png)
    return ScaleReplacementResult(png, write_csv(os.path.join(out_dir, "scale_replacement.csv"), rows), curves)


def _plot(curves, n_scales: int, path: str) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    ks = list(range(n_scales + 1))
    for ax, d in zip(axes, DIRECTIONS):
        for task, c in curves.items():
            ax.plot(ks, c[d], marker="o", ms=3, color=TASK_COLOURS.get(task), label=task)
        ax.set_xticks(ks)
        ax.set_xlabel(f"number of {'coarsest' if d == 'coarse' else 'finest'} scales replaced by the clean "
                      "image's tokens", fontsize=8)
        ax.set_title(f"{d} scales replaced ({'1x1 first' if d == 'coarse' else '16x16 first'})", fontsize=9)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("PSNR of the decoded mixture vs clean (dB)")
    axes[1].legend(fontsize=8)
    fig.suptitle("Scale replacement: 0 = degraded image's reconstruction, 10 = clean image's", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
