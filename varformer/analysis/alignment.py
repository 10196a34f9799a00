"""Distribution alignment (the paper's motivating analysis): VAR features of degraded and clean images before and
after the next-scale prediction, projected to 2-D, coloured by task.

Features are VAR's latent ``f_hat`` (32 x 16 x 16, the sum of the ten scales' contributions), flattened:
- before: the multi-scale quantisation of the image itself (the frozen VQVAE tokenizer: what VAR would read);
- after: the model's greedy next-scale prediction conditioned on the image (Adapter + cross-attention + VAR,
  ``var_prediction``), i.e. the prior the restorer receives.
One PCA is fitted to all four groups (degraded/clean x before/after), so the two panels show the same projection
(each with its own axis ranges). The
claim under test: after the prediction, degraded images move towards their clean counterparts and the tasks
separate less. ``alignment_summary.csv`` measures both: the relative distance degraded -> clean per task, and the
share of the degraded features' variance that the task explains.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict, List

import numpy as np
import torch

from varformer.analysis.common import (TASK_COLOURS, TaskImages, batches, between_class_fraction, pca_2d, pyplot,
                                       write_csv)
from varformer.errors import ConfigError


def _tokenizer_fhat(model, x01: torch.Tensor) -> torch.Tensor:
    vae = model.vae
    with torch.inference_mode():
        return vae.f_to_indices_and_fhats(vae.encode(x01 * 2 - 1))[1][-1]


@dataclass
class AlignmentResult:
    png: str
    points_csv: str
    summary_csv: str
    summary: List[Dict[str, object]]


def alignment_analysis(model, tasks: List[TaskImages], out_dir: str, batch_size: int = 4) -> AlignmentResult:
    if getattr(model, "var", None) is None:
        raise ConfigError("the alignment analysis needs a model with the VAR prior (not the prior=none ablation)")
    device = next(model.parameters()).device
    feats: Dict[str, List[np.ndarray]] = {k: [] for k in ("lq_before", "gt_before", "lq_after", "gt_after")}
    labels, names = [], []
    for t in tasks:
        for sl in batches(len(t.names), batch_size):
            lq, gt = t.lq[sl].to(device), t.gt[sl].to(device)
            feats["lq_before"].append(_tokenizer_fhat(model, lq).flatten(1).cpu().numpy())
            feats["gt_before"].append(_tokenizer_fhat(model, gt).flatten(1).cpu().numpy())
            feats["lq_after"].append(model.var_prediction(lq).f_hat.flatten(1).cpu().numpy())
            feats["gt_after"].append(model.var_prediction(gt).f_hat.flatten(1).cpu().numpy())
        labels += [t.task] * len(t.names)
        names += t.names
    F = {k: np.concatenate(v).astype(np.float64) for k, v in feats.items()}
    n = len(labels)
    xy = pca_2d(np.concatenate([F["lq_before"], F["gt_before"], F["lq_after"], F["gt_after"]]))
    groups = {k: xy[i * n:(i + 1) * n] for i, k in enumerate(F)}

    points = [{"task": labels[i], "image": names[i], "image_kind": k.split("_")[0].replace("lq", "degraded")
               .replace("gt", "clean"), "features": k.split("_")[1], "pc1": float(groups[k][i, 0]),
               "pc2": float(groups[k][i, 1])} for k in F for i in range(n)]

    def rel(a, b):
        return np.linalg.norm(a - b, axis=1) / np.maximum(np.linalg.norm(b, axis=1), 1e-12)

    d_before, d_after = rel(F["lq_before"], F["gt_before"]), rel(F["lq_after"], F["gt_after"])
    d_to_clean = rel(F["lq_after"], F["gt_before"])
    summary = []
    for task in dict.fromkeys(labels):
        m = np.asarray(labels) == task
        summary.append({"task": task, "images": int(m.sum()),
                        "dist_degraded_clean_before": float(d_before[m].mean()),
                        "dist_degraded_clean_after": float(d_after[m].mean()),
                        "dist_prediction_to_clean_tokens": float(d_to_clean[m].mean())})
    summary.append({"task": "all (task-explained variance of the degraded features)", "images": n,
                    "dist_degraded_clean_before": between_class_fraction(F["lq_before"], labels),
                    "dist_degraded_clean_after": between_class_fraction(F["lq_after"], labels),
                    "dist_prediction_to_clean_tokens": float("nan")})

    os.makedirs(out_dir, exist_ok=True)
    png = os.path.join(out_dir, "alignment.png")
    _plot(groups, labels, summary, png)
    return AlignmentResult(png, write_csv(os.path.join(out_dir, "alignment_points.csv"), points),
                           write_csv(os.path.join(out_dir, "alignment_summary.csv"), summary), summary)


def _plot(groups: Dict[str, np.ndarray], labels: List[str], summary, path: str) -> None:
    plt = pyplot()
    # one projection for both panels, each with its own axis ranges (before and after can lie far apart)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.5))
    labels_arr = np.asarray(labels)
    for ax, stage, title in ((axes[0], "before", "before: tokenizer features of the image"),
                             (axes[1], "after", "after: VAR next-scale prediction")):
        for task in dict.fromkeys(labels):
            m = labels_arr == task
            colour = TASK_COLOURS.get(task, None)
            ax.scatter(*groups[f"lq_{stage}"][m].T, s=28, marker="x", color=colour, label=f"{task} degraded")
            ax.scatter(*groups[f"gt_{stage}"][m].T, s=28, marker="o", facecolors="none", edgecolors=colour,
                       label=f"{task} clean")
        sep = summary[-1]["dist_degraded_clean_before" if stage == "before" else "dist_degraded_clean_after"]
        spread = float(np.ptp(np.concatenate([groups[f"lq_{stage}"], groups[f"gt_{stage}"]]), axis=0).max())
        scale = float(np.ptp(np.concatenate(list(groups.values())), axis=0).max())
        same = " -- all points coincide" if spread <= 1e-6 * max(scale, 1e-12) else ""
        ax.set_title(f"{title}\n(task-explained variance of degraded: {sep:.2f}{same})", fontsize=9)
        ax.set_xlabel("PC 1")
    axes[0].set_ylabel("PC 2")
    axes[1].legend(fontsize=7, ncol=2, loc="best")
    fig.suptitle("VAR features (f_hat), one PCA for both panels: degraded x, clean o", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
