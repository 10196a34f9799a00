"""Validation during training, shared by every method's task: held-out pairs from the benchmarks of the run's
``eval`` section, and the restoration metrics of a model on them.

    pairs = validation_pairs(cfg, resize)          # at most train.val_images, round-robin over eval.benchmarks
    metrics, visuals = restoration_metrics(model, pairs, batch=4, crop_border=4)
"""
from __future__ import annotations

from typing import Callable, Dict, List, Optional, Tuple

import torch
from torch import nn

from varformer.data.benchmark_data import benchmark_dataset
from varformer.data.catalog import expand_names
from varformer.metrics import psnr, ssim

Pair = Dict[str, torch.Tensor]


def validation_pairs(cfg, resize: Callable[[torch.Tensor], torch.Tensor]) -> List[Pair]:
    """Held-out (lq, gt) pairs, each image passed through ``resize`` (the method's validation size):
    ``eval.benchmarks`` under ``eval.root`` (each benchmark's default root when unset, e.g. the demo set for
    ``demo``); at most ``train.val_images``, taken round-robin across the benchmarks. Read before the model is
    built, so a bad file stops the run early."""
    if cfg.train.val_every <= 0 or cfg.train.val_images <= 0:
        return []
    names = expand_names(list(cfg.eval.benchmarks))
    if not names:
        return []
    sets = [benchmark_dataset(n, cfg.eval.root) for n in names]
    pairs: List[Pair] = []
    i = 0
    while len(pairs) < cfg.train.val_images and any(i < len(s) for s in sets):
        for s in sets:
            if i < len(s) and len(pairs) < cfg.train.val_images:
                item = s[i]
                pairs.append({"lq": resize(item["lq"].float()), "gt": resize(item["gt"].float())})
        i += 1
    return pairs


def restoration_metrics(model: nn.Module, pairs: List[Pair], batch: int, crop_border: int = 0,
                        extra: Optional[Callable[[torch.Tensor, torch.Tensor, torch.Tensor], Dict[str, float]]] = None
                        ) -> Tuple[Dict[str, float], Dict[str, torch.Tensor]]:
    """Mean PSNR/SSIM of ``model(lq)`` and of the input itself on ``pairs`` (RGB, ``crop_border``), plus the means
    of ``extra(lq, out, gt)`` per chunk (e.g. a loss on held-out images), and the first rows as visuals."""
    device = next(model.parameters()).device
    sums: Dict[str, float] = {}
    counts: Dict[str, int] = {}
    shown: List[Tuple[torch.Tensor, ...]] = []
    for i in range(0, len(pairs), batch):
        chunk = pairs[i:i + batch]
        lq = torch.stack([p["lq"] for p in chunk]).to(device)
        gt = torch.stack([p["gt"] for p in chunk]).to(device)
        out = model(lq)
        values = {"psnr": [float(v) for v in psnr(out, gt, crop_border=crop_border)],
                  "ssim": [float(v) for v in ssim(out, gt, crop_border=crop_border)],
                  "psnr_input": [float(v) for v in psnr(lq, gt, crop_border=crop_border)]}
        for k, vs in values.items():
            sums[k] = sums.get(k, 0.0) + sum(vs)
            counts[k] = counts.get(k, 0) + len(vs)
        for k, v in (extra(lq, out, gt) if extra is not None else {}).items():
            sums[k] = sums.get(k, 0.0) + v * len(chunk)
            counts[k] = counts.get(k, 0) + len(chunk)
        shown.append((lq[:2].cpu(), out[:2].float().cpu(), gt[:2].cpu()))
    if not counts:
        return {}, {}
    lq, out, gt = (torch.cat(t)[:4] for t in zip(*shown))
    return {k: sums[k] / counts[k] for k in sums}, {"lq": lq, "output": out, "gt": gt}
