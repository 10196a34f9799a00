"""Distribution alignment (the paper's Figure 1, part (2)): VAR features of degraded and clean images before and
after the next-scale prediction, projected to 2-D (t-SNE as in the paper; PCA on request or without
scikit-learn), coloured by task.

Features are VAR's latent ``f_hat`` (32 x 16 x 16, the sum of the ten scales' contributions), flattened:
- ``before``: the image's own multi-scale tokens (the frozen VQVAE tokenizer: what VAR reads);
- ``var`` (the paper's claim, about VAR itself): VAR's next-scale prediction of every scale from the image's own
  coarser scales (teacher forcing, no Adapter, no cross-attention; ``common.next_scale_prediction``);
- ``model``: the trained model's greedy prediction conditioned on the image (Adapter + cross-attention + VAR,
  ``var_prediction``), i.e. the prior its restorer receives: what training added.
One projection is fitted to every group together, so the panels share it (each with its own axis ranges).
``alignment_summary.csv`` measures, per task, the relative distance degraded -> clean under each feature kind,
and the share of the degraded features' variance that the task explains (lower = the tasks overlap more).
"""
from __future__ import annotations

import os
from typing import Dict, List

import numpy as np

from varformer.errors import ConfigError
from varformer.methods.figures import (PROJECTIONS, TASK_COLOURS, available, batches, between_class_fraction,
                                       project_2d, projection_to_use, pyplot, save_figure, write_csv)
from varformer.model.analysis.common import (add_var_argument, analysed_var, fhat_of, next_scale_prediction, prepare,
                                             tokens_of)

KINDS = {"before": "before: the image's own tokens",
         "var": "after: VAR's next-scale prediction (teacher-forced on the image)",
         "model": "after: the trained model's prediction (Adapter + cross-attention + VAR)"}
AFTER = ("var", "model", "both")


def alignment_features(model, var, tasks, kinds, batch_size: int = 4):
    """{(image kind, feature kind): (N, 32*16*16) float64}, the task labels and image names."""
    device = next(model.parameters()).device
    feats: Dict[tuple, List[np.ndarray]] = {(i, k): [] for k in kinds for i in ("degraded", "clean")}
    labels, names = [], []
    for t in tasks:
        for sl in batches(len(t.names), batch_size):
            for image_kind, x in (("degraded", t.lq[sl].to(device)), ("clean", t.gt[sl].to(device))):
                idx = tokens_of(model.vae, x)
                for k in kinds:
                    if k == "before":
                        f = fhat_of(model.vae, idx)
                    elif k == "var":
                        f = fhat_of(model.vae, next_scale_prediction(var, idx))
                    else:
                        f = model.var_prediction(x).f_hat
                    feats[(image_kind, k)].append(f.flatten(1).float().cpu().numpy())
        labels += [t.task] * len(t.names)
        names += t.names
    return {key: np.concatenate(v).astype(np.float64) for key, v in feats.items()}, labels, names


def _rel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.linalg.norm(a - b, axis=1) / np.maximum(np.linalg.norm(b, axis=1), 1e-12)


def summarise(F, labels: List[str], kinds) -> List[Dict[str, object]]:
    summary = []
    lab = np.asarray(labels)
    dist = {k: _rel(F[("degraded", k)], F[("clean", k)]) for k in kinds}
    for task in dict.fromkeys(labels):
        m = lab == task
        summary.append({"task": task, "images": int(m.sum()),
                        **{f"dist_degraded_clean_{k}": float(dist[k][m].mean()) for k in kinds}})
    summary.append({"task": "all (task-explained variance of the degraded features)", "images": len(labels),
                    **{f"dist_degraded_clean_{k}": between_class_fraction(F[("degraded", k)], labels)
                       for k in kinds}})
    return summary


def _plot(xy, labels, kinds, summary, projection: str, var_label: str, path: str) -> str:
    plt = pyplot()
    fig, axes = plt.subplots(1, len(kinds), figsize=(5 * len(kinds), 4.5), squeeze=False)
    lab = np.asarray(labels)
    for ax, k in zip(axes[0], kinds):
        for task in dict.fromkeys(labels):
            m = lab == task
            colour = TASK_COLOURS.get(task)
            ax.scatter(*xy[("degraded", k)][m].T, s=28, marker="x", color=colour, label=f"{task} degraded")
            ax.scatter(*xy[("clean", k)][m].T, s=28, marker="o", facecolors="none", edgecolors=colour,
                       label=f"{task} clean")
        sep = summary[-1][f"dist_degraded_clean_{k}"]
        ax.set_title(f"{KINDS[k]}\n(task-explained variance of degraded: {sep:.2f})", fontsize=8)
        ax.set_xlabel(f"{projection.upper()} 1")
    axes[0][0].set_ylabel(f"{projection.upper()} 2")
    axes[0][-1].legend(fontsize=6, ncol=2, loc="best")
    fig.suptitle(f"VAR features (f_hat), one {projection.upper()} for all panels: degraded x, clean o; VAR: "
                 f"{var_label}", fontsize=8)
    return save_figure(fig, path)


def add_arguments(parser) -> None:
    parser.add_argument("--after", choices=AFTER, default="both",
                        help="the features after the prediction: var (VAR alone, the paper's claim), model (the "
                             "trained Adapter + cross-attention + VAR), both (default)")
    parser.add_argument("--projection", choices=PROJECTIONS, default="tsne",
                        help="tsne (default, as the paper; needs scikit-learn, else PCA with a note) or pca")
    add_var_argument(parser)


def run(args, info) -> List[str]:
    # the optional modules were checked (one line each when missing) by the command before this compute
    projection, _ = projection_to_use(args.projection)
    plot = available("matplotlib")
    inputs = prepare(args, info)
    model, lines = inputs.model, inputs.lines
    kinds = ["before"] + (["var", "model"] if args.after == "both" else [args.after])
    if "model" in kinds and getattr(model, "var", None) is None:
        raise ConfigError("these weights have no VAR prior (ablation prior=none): there is no model prediction; "
                          "use --after var with --var var_d16.pth")
    var, var_label = analysed_var(model, args.var, inputs.device) if "var" in kinds else (None, "not used")
    lines.append(f"VAR: {var_label}; projection: {projection}")
    F, labels, names = alignment_features(model, var, inputs.tasks, kinds, args.batch_size)
    keys = list(F)
    n = len(labels)
    flat = project_2d(np.concatenate([F[key] for key in keys]), projection)
    xy = {key: flat[i * n:(i + 1) * n] for i, key in enumerate(keys)}
    points = [{"task": labels[i], "image": names[i], "image_kind": key[0], "features": key[1],
               "projection": projection, "x": float(xy[key][i, 0]), "y": float(xy[key][i, 1])}
              for key in keys for i in range(n)]
    summary = summarise(F, labels, kinds)
    out = args.output_dir
    files = [write_csv(os.path.join(out, "alignment_points.csv"), points),
             write_csv(os.path.join(out, "alignment_summary.csv"), summary)]
    if plot:
        files.append(_plot(xy, labels, kinds, summary, projection, var_label, os.path.join(out, "alignment.png")))
    for r in summary[:-1]:
        lines.append(f"  {r['task']}: degraded->clean distance "
                     + ", ".join(f"{k} {r[f'dist_degraded_clean_{k}']:.3f}" for k in kinds))
    return lines + ["wrote " + ", ".join(files)]

