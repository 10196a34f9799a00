"""Cost of a training step (``varformer benchmark train``): images/s and peak memory of real optimiser steps on a
small configuration, and the activation memory of the official configuration estimated on fake tensors
(``varformer.training.memory``: nothing computed, nothing allocated)."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Dict, List

import torch

from varformer.config import load_config
from varformer.model import VarFormerSettings, build_varformer
from varformer.perf.measure import measure_peak_memory
from varformer.runtime import autocast, resolve_device, synchronize
from varformer.model.loss import VarFormerLoss
from varformer.model.memory import estimate_saved_activations
from varformer.model.task import VarFormerTask, freeze_for

# the official recipes' layouts (configs/stage{1,2}.yaml)
OFFICIAL = {1: VarFormerSettings(stage=1, depth=20, vae_ch=160, n_cross=20),
            2: VarFormerSettings(stage=2, depth=20, vae_ch=160, n_cross=6, dec_adjust=True)}
SMALL = {1: VarFormerSettings(stage=1, depth=2, vae_ch=32, n_cross=2),
         2: VarFormerSettings(stage=2, depth=2, vae_ch=32, n_cross=2)}


@dataclass
class StepCost:
    images_per_s: float
    peak_bytes: int
    seconds_per_step: float


def measure_step(task, batch: Dict[str, torch.Tensor], precision: str, steps: int = 2) -> StepCost:
    """Time ``steps`` optimiser steps of a ``TrainTask`` (after one warm-up step) and their peak memory."""
    device = batch["lq"].device
    params = [p for p in task.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=1e-4, fused=device.type == "cuda")
    task.train()

    def one():
        with autocast(device, precision):
            out = task(batch)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()

    one()
    synchronize(device)
    t0 = time.perf_counter()
    peak = measure_peak_memory(lambda: [one() for _ in range(steps)], device)
    synchronize(device)
    dt = (time.perf_counter() - t0) / steps
    return StepCost(images_per_s=batch["lq"].shape[0] / dt, peak_bytes=peak, seconds_per_step=dt)


def _small_step_line(stage: int, batch: int, precision: str, device: str, steps: int, log) -> str:
    dev = resolve_device(device)
    torch.manual_seed(0)
    model = build_varformer(SMALL[stage])
    freeze_for(model, stage, "official")
    loss_cfg = load_config(None, ["train.loss.perceptual=0"]).train.loss
    task = VarFormerTask(model, VarFormerLoss(loss_cfg, stage, None), stage).to(dev)
    data = {"lq": torch.rand(batch, 3, 256, 256, device=dev), "gt": torch.rand(batch, 3, 256, 256, device=dev)}
    log(f"small stage-{stage} configuration: 1 warm-up + {steps} timed steps")
    cost = measure_step(task, data, precision, steps)
    what = "peak allocated" if dev.type == "cuda" else "peak process RSS"
    return (f"small stage-{stage} step (vae_ch 32, VAR depth 2, batch {batch}, {precision}, {dev}): "
            f"{cost.seconds_per_step:.2f} s/step, {cost.images_per_s:.3f} images/s, {what} "
            f"{cost.peak_bytes / 2 ** 30:.2f} GiB (perceptual term off: no VGG19 weights offline)")


def run_training_benchmark(stage: int = 2, batch: int = 2, precision: str = "bf16", device: str = "auto",
                           steps: int = 2, small: bool = True,
                           log: Callable[[str], None] = lambda m: None) -> List[str]:
    """Report lines: images/s and peak memory of real optimiser steps of the small configuration (vae_ch 32, VAR
    depth 2, random backbone, perceptual term off) on ``device``, then the activation memory per image of the
    official configuration (stage 2: d20, ch 160, 6 cross blocks, dec_adjust; stage 1: d20, 20 cross blocks) in
    fp32 and bf16, with and without activation checkpointing."""
    if stage not in (1, 2):
        raise ValueError(f"stage must be 1 or 2, got {stage}")
    if batch < 1 or steps < 1:
        raise ValueError("need batch >= 1 and steps >= 1")
    gib = 2 ** 30
    lines = [_small_step_line(stage, batch, precision, device, steps, log)] if small else []
    for ckpt in (False, True):
        log(f"official stage-{stage} configuration (fake tensors: nothing computed), activation checkpointing {ckpt}")
        per_image, pb = estimate_saved_activations(OFFICIAL[stage], ckpt)
        lines.append(f"official stage-{stage} configuration, activation checkpointing {'on ' if ckpt else 'off'}: "
                     f"saved activations per image {per_image['fp32'] / gib:.1f} GiB fp32, "
                     f"{per_image['bf16'] / gib:.1f} GiB bf16 autocast; weights/grads/Adam/EMA "
                     f"{pb['state_bytes'] / gib:.1f} GiB ({pb['trainable_params'] / 1e6:.0f} M trainable, "
                     f"{pb['frozen_params'] / 1e6:.0f} M frozen); batch 16 on one device: "
                     f"~{(16 * per_image['fp32'] + pb['state_bytes']) / gib:.0f} GiB fp32, "
                     f"~{(16 * per_image['bf16'] + pb['state_bytes']) / gib:.0f} GiB bf16")
    return lines
