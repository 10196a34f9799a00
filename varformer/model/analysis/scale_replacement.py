"""Scale replacement (the paper's Figure 1, part (1)): which VAR scales carry which degradation.

``prediction`` (the paper's quantity, the default): the degraded image is tokenised by the frozen VQVAE (ten index
maps, 1x1 ... 16x16); VAR predicts each scale from the degraded image's own coarser scales
(``common.next_scale_prediction``). For each scale ``k`` alone, the degraded image's tokens at ``k`` are replaced by
VAR's prediction, the mixture is decoded, and PSNR against the clean image is measured (``paper`` protocol
metrics: RGB, crop 4, 8-bit). The gain over the degraded image's own reconstruction, per scale and task, says
where VAR's prediction removes the degradation (the paper: coarse scales for global degradations such as haze and
low light, fine scales for local ones such as noise and rain).

``oracle`` (a labelled variant, not the paper's quantity): the degraded image's ``k`` coarsest (or finest) scales
replaced by the *clean image's* tokens: how much of the degradation each end of the pyramid holds, with no VAR.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict, List

import numpy as np
import torch

from varformer.methods.figures import (TASK_COLOURS, TaskImages, available, batches, pyplot,
                                       save_figure, write_csv)
from varformer.metrics import psnr
from varformer.model.analysis.common import (PATCH_NUMS, add_var_argument, analysed_var, decode, next_scale_prediction,
                                             prepare, tokens_of)

VARIANTS = ("prediction", "oracle", "both")
DIRECTIONS = ("coarse", "fine")


def mixed_tokens(idx_lq: List[torch.Tensor], idx_gt: List[torch.Tensor], k: int, direction: str
                 ) -> List[torch.Tensor]:
    """The degraded image's index maps with the ``k`` coarsest (``direction='coarse'``) or finest scales taken
    from the clean image's."""
    n = len(idx_lq)
    take_gt = range(k) if direction == "coarse" else range(n - k, n)
    return [idx_gt[i] if i in take_gt else idx_lq[i] for i in range(n)]


def replaced_scale(idx_lq: List[torch.Tensor], predicted: List[torch.Tensor], k: int) -> List[torch.Tensor]:
    """The degraded image's index maps with scale ``k`` (0-based) replaced by VAR's prediction of it."""
    return [predicted[i] if i == k else idx_lq[i] for i in range(len(idx_lq))]


def _psnr_sum(vae, mixes: List[List[torch.Tensor]], gt: torch.Tensor) -> List[float]:
    """Summed PSNR over the batch of each mixture (decoded together)."""
    img = decode(vae, [torch.cat(per_scale) for per_scale in zip(*mixes)])
    values = psnr(img, gt.repeat(len(mixes), 1, 1, 1), crop_border=4).view(len(mixes), -1).sum(1)
    return values.tolist()


@dataclass
class ScaleReplacementResult:
    rows: List[Dict[str, object]]
    prediction: Dict[str, List[float]]            # task -> PSNR for [none, scale 1 .. scale 10]
    oracle: Dict[str, Dict[str, List[float]]]     # task -> direction -> PSNR for k = 0..10


def scale_replacement(vae, var, tasks: List[TaskImages], variant: str = "prediction", batch_size: int = 4
                      ) -> ScaleReplacementResult:
    device = next(vae.parameters()).device
    n = len(vae.patch_nums)
    rows: List[Dict[str, object]] = []
    prediction: Dict[str, List[float]] = {}
    oracle: Dict[str, Dict[str, List[float]]] = {}
    for t in tasks:
        pred_sum, orc_sum = np.zeros(n + 1), {d: np.zeros(n + 1) for d in DIRECTIONS}
        for sl in batches(len(t.names), batch_size):
            lq, gt = t.lq[sl].to(device), t.gt[sl].to(device)
            idx_lq = tokens_of(vae, lq)
            if variant in ("prediction", "both"):
                predicted = next_scale_prediction(var, idx_lq)
                mixes = [idx_lq] + [replaced_scale(idx_lq, predicted, k) for k in range(n)]
                pred_sum += np.asarray(_psnr_sum(vae, mixes, gt))
            if variant in ("oracle", "both"):
                idx_gt = tokens_of(vae, gt)
                # k = 0 and k = n are the same mixture from both ends: decoded once
                mixes = [mixed_tokens(idx_lq, idx_gt, k, "coarse") for k in range(n + 1)] + \
                        [mixed_tokens(idx_lq, idx_gt, k, "fine") for k in range(1, n)]
                scores = _psnr_sum(vae, mixes, gt)
                orc_sum["coarse"] += np.asarray(scores[:n + 1])
                orc_sum["fine"] += np.asarray([scores[0]] + scores[n + 1:] + [scores[n]])
        count = len(t.names)
        if variant in ("prediction", "both"):
            prediction[t.task] = list(pred_sum / count)
            base = prediction[t.task][0]
            rows += [{"variant": "prediction", "task": t.task, "images": count, "replaced": "none", "k": 0,
                      "scales": "-", "psnr": base, "gain_db": 0.0}]
            rows += [{"variant": "prediction", "task": t.task, "images": count, "replaced": "VAR prediction",
                      "k": k + 1, "scales": str(PATCH_NUMS[k]), "psnr": prediction[t.task][k + 1],
                      "gain_db": prediction[t.task][k + 1] - base} for k in range(n)]
        if variant in ("oracle", "both"):
            oracle[t.task] = {d: list(orc_sum[d] / count) for d in DIRECTIONS}
            for d in DIRECTIONS:
                for k in range(n + 1):
                    scales = PATCH_NUMS[:k] if d == "coarse" else PATCH_NUMS[n - k:]
                    rows.append({"variant": "oracle (clean tokens)", "task": t.task, "images": count,
                                 "replaced": d, "k": k, "scales": " ".join(map(str, scales)) or "-",
                                 "psnr": oracle[t.task][d][k], "gain_db": oracle[t.task][d][k] - oracle[t.task][d][0]})
    return ScaleReplacementResult(rows, prediction, oracle)


def _plot(res: ScaleReplacementResult, var_label: str, path: str) -> str:
    plt = pyplot()
    panels = (["prediction"] if res.prediction else []) + ([d for d in DIRECTIONS] if res.oracle else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        if panel == "prediction":
            x = list(range(1, len(PATCH_NUMS) + 1))
            for task, c in res.prediction.items():
                ax.plot(x, [v - c[0] for v in c[1:]], marker="o", ms=3, color=TASK_COLOURS.get(task), label=task)
            ax.axhline(0, color="k", lw=0.5)
            ax.set_xticks(x)
            ax.set_xticklabels([str(p) for p in PATCH_NUMS], fontsize=7)
            ax.set_xlabel("scale replaced by VAR's prediction (tokens per side)", fontsize=8)
            ax.set_ylabel("PSNR gain over the degraded reconstruction (dB)", fontsize=8)
            ax.set_title("paper (Fig. 1): one scale replaced by VAR's prediction", fontsize=9)
        else:
            ks = list(range(len(PATCH_NUMS) + 1))
            for task, c in res.oracle.items():
                ax.plot(ks, c[panel], marker="o", ms=3, color=TASK_COLOURS.get(task), label=task)
            ax.set_xticks(ks)
            ax.set_xlabel(f"number of {'coarsest' if panel == 'coarse' else 'finest'} scales taken from the clean "
                          "image", fontsize=8)
            ax.set_ylabel("PSNR vs clean (dB)", fontsize=8)
            ax.set_title(f"oracle, not the paper's quantity: {panel} scales = clean tokens", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"Scale replacement; VAR: {var_label}", fontsize=8)
    return save_figure(fig, path)


def add_arguments(parser) -> None:
    parser.add_argument("--variant", choices=VARIANTS, default="prediction",
                        help="prediction (default, the paper's: one scale of the degraded image replaced by VAR's "
                             "prediction), oracle (the k coarsest/finest scales replaced by the clean image's "
                             "tokens, no VAR), or both")
    add_var_argument(parser)


def run(args, info) -> List[str]:
    plot = available("matplotlib")    # checked by the command, one line when missing, before this compute
    inputs = prepare(args, info)
    model, lines = inputs.model, inputs.lines
    var, var_label = (analysed_var(model, args.var, inputs.device) if args.variant != "oracle"
                      else (None, "not used (oracle variant)"))
    lines.append(f"VAR: {var_label}")
    res = scale_replacement(model.vae, var, inputs.tasks, args.variant, args.batch_size)
    out = args.output_dir
    files = [write_csv(os.path.join(out, "scale_replacement.csv"), res.rows)]
    if plot:
        files.append(_plot(res, var_label, os.path.join(out, "scale_replacement.png")))
    for task, c in res.prediction.items():
        best = int(np.argmax(c[1:]))
        lines.append(f"  {task}: degraded reconstruction {c[0]:.2f} dB; best single scale replaced by VAR's "
                     f"prediction: {PATCH_NUMS[best]}x{PATCH_NUMS[best]} ({c[best + 1] - c[0]:+.2f} dB)")
    for task, c in res.oracle.items():
        half = len(c["coarse"]) // 2
        lines.append(f"  {task} (oracle, clean tokens): {half} coarsest scales clean {c['coarse'][half]:.2f} dB, "
                     f"{half} finest clean {c['fine'][half]:.2f} dB")
    return lines + ["wrote " + ", ".join(files)]
