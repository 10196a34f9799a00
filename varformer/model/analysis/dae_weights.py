"""DAE scale weights per task: the mean softmax weight each DAE level (encoder levels 1-4, decoder levels 4-1) gives
each of the ten VAR scales, per degradation (``training_outputs(...).dae_weights``). The paper's reading of its
DAE (Sec. 3): the degradation-aware choice differs by task (global degradations lean on coarse scales, local ones
on fine scales). A ``prior: fixed`` ablation model has uniform weights, which the figure then shows flat.
"""
from __future__ import annotations

import os
from typing import Dict, List

import numpy as np
import torch

from varformer.errors import ConfigError
from varformer.methods.figures import (TASK_COLOURS, TaskImages, available, batches, pyplot, save_figure,
                                       write_csv)
from varformer.model.analysis.common import PATCH_NUMS, prepare


def dae_weights(model, tasks: List[TaskImages], batch_size: int = 4) -> Dict[str, Dict[str, List[float]]]:
    """task -> DAE level -> mean weight per scale."""
    if getattr(model, "stage", 1) != 2 or getattr(model, "prior", "none") == "none":
        raise ConfigError("the DAE weights analysis needs a stage-2 VarFormer with the VAR prior (a stage-1 model "
                          "or the prior=none ablation has no DAE)")
    device = next(model.parameters()).device
    result: Dict[str, Dict[str, List[float]]] = {}
    for t in tasks:
        sums: Dict[str, np.ndarray] = {}
        for sl in batches(len(t.names), batch_size):
            with torch.no_grad():
                out = model.training_outputs(t.lq[sl].to(device))
            for level, w in out.dae_weights.items():
                sums[level] = sums.get(level, 0) + w.float().sum(0).cpu().numpy()
        result[t.task] = {level: list(s / len(t.names)) for level, s in sums.items()}
    return result


def _plot(result, levels: List[str], path: str) -> str:
    plt = pyplot()
    cols = 4
    rows = (len(levels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), sharey=True, squeeze=False)
    x = list(range(len(PATCH_NUMS)))
    for ax, level in zip(axes.flat, levels):
        for task, w in result.items():
            ax.plot(x, w[level], marker="o", ms=3, color=TASK_COLOURS.get(task), label=task)
        ax.axhline(1 / len(PATCH_NUMS), color="k", lw=0.5, ls=":")
        ax.set_title(level, fontsize=9)
        ax.set_xticks(x)
        ax.set_xticklabels([str(p) for p in PATCH_NUMS], fontsize=7)
    for ax in axes.flat[len(levels):]:
        ax.axis("off")
    for ax in axes[:, 0]:
        ax.set_ylabel("mean weight")
    for ax in axes[-1]:
        ax.set_xlabel("VAR scale (tokens per side)", fontsize=8)
    axes.flat[0].legend(fontsize=7)
    fig.suptitle("DAE scale weights per task (dotted: uniform 1/10)", fontsize=10)
    return save_figure(fig, path)


def run(args, info) -> List[str]:
    plot = available("matplotlib")    # checked by the command, one line when missing, before this compute
    inputs = prepare(args, info)
    result = dae_weights(inputs.model, inputs.tasks, args.batch_size)
    levels = list(next(iter(result.values())))
    rows = [{"task": task, "level": level, **{f"scale_{pn}x{pn}": w[level][i] for i, pn in enumerate(PATCH_NUMS)}}
            for task, w in result.items() for level in levels]
    files = [write_csv(os.path.join(args.output_dir, "dae_weights.csv"), rows)]
    if plot:
        files.append(_plot(result, levels, os.path.join(args.output_dir, "dae_weights.png")))
    return inputs.lines + ["wrote " + ", ".join(files)]
