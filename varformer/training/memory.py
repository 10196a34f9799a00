"""Cost of one training step: measured images/s and peak memory on a real device, and an analytic estimate of
the activation memory of the full configuration on fake tensors (no memory is allocated, nothing computed).

The estimate counts the tensors autograd saves for backward during ``training_outputs`` (views counted once,
by their base tensor), i.e. what a step holds between forward and backward, on top of weights, gradients and
Adam states (16 bytes per trainable parameter in fp32 + 4 per frozen one).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Dict, List

import torch
from torch import nn


def saved_activation_bytes(model: nn.Module, lq: torch.Tensor) -> int:
    """Bytes autograd keeps for backward after ``model.training_outputs(lq)`` (works on ``meta`` and fake tensors)."""
    seen: Dict[int, int] = {}
    keep = []

    def pack(t: torch.Tensor):
        base = t._base if t._base is not None else t
        if not isinstance(base, nn.Parameter):  # weights are counted as model state, not activations
            seen[id(base)] = base.numel() * base.element_size()
            keep.append(base)  # keeps the ids unique while counting
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model.training_outputs(lq)
    return sum(seen.values())


@dataclass
class StepCost:
    images_per_s: float
    peak_bytes: int
    seconds_per_step: float


def parameter_bytes(model: nn.Module) -> Dict[str, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    # fp32 weights + grads + Adam (exp_avg, exp_avg_sq) + EMA shadow for trainable; fp32 weights for frozen
    return {"trainable_params": trainable, "frozen_params": frozen,
            "state_bytes": trainable * 4 * 5 + frozen * 4}


def measure_step(task, batch: Dict[str, torch.Tensor], precision: str, steps: int = 2) -> StepCost:
    """Time ``steps`` optimiser steps of a ``TrainTask`` (after one warm-up step) and their peak memory."""
    from varformer.profiling import measure_peak_memory
    from varformer.training.loop import autocast_context
    device = batch["lq"].device
    params = [p for p in task.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=1e-4, fused=device.type == "cuda")
    task.train()

    def one():
        with autocast_context(device, precision):
            out = task(batch)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()

    one()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    peak = measure_peak_memory(lambda: [one() for _ in range(steps)], device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    dt = (time.perf_counter() - t0) / steps
    return StepCost(images_per_s=batch["lq"].shape[0] / dt, peak_bytes=peak, seconds_per_step=dt)


def _stage_model(stage: int, depth: int, vae_ch: int, n_cross: int, dec_adjust: bool) -> nn.Module:
    from varformer.model import VarFormer, VarFormerStage1
    if stage == 2:
        return VarFormer(depth=depth, vae_ch=vae_ch, n_cross=n_cross, dec_adjust=dec_adjust)
    return VarFormerStage1(depth=depth, vae_ch=vae_ch, n_cross=n_cross)


def estimate_saved_activations(stage: int, depth: int, vae_ch: int, n_cross: int, dec_adjust: bool,
                               checkpointing: bool):
    """({'fp32': bytes, 'bf16': bytes} saved for backward per 256x256 image, ``parameter_bytes``) of a stage's model
    in training mode with the official freezing, counted without computing or allocating: the model is built on
    ``meta``, given uninitialised CPU storage that is never touched, and run on fake CPU tensors, so the kernels
    chosen (and what they save, e.g. flash attention's log-sum-exp rather than the attention map) and autocast are
    those of a real device."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    from varformer.training.activation_checkpointing import enable_activation_checkpointing
    from varformer.training.stages import freeze_for
    with torch.device("meta"):
        model = _stage_model(stage, depth, vae_ch, n_cross, dec_adjust)
    freeze_for(model, stage, "official")
    pb = parameter_bytes(model)
    model = model.to_empty(device="cpu").train()
    if checkpointing:
        enable_activation_checkpointing(model)
    with FakeTensorMode(allow_non_fake_inputs=True):
        lq = torch.empty(1, 3, 256, 256)
        out = {"fp32": saved_activation_bytes(model, lq)}
        with torch.autocast("cpu", torch.bfloat16):
            out["bf16"] = saved_activation_bytes(model, lq)
    return out, pb


def run_training_benchmark(stage: int = 2, batch: int = 2, precision: str = "bf16", device: str = "cpu",
                           steps: int = 2, small: bool = True,
                           log: Callable[[str], None] = lambda m: None) -> List[str]:
    """Report lines: images/s and peak memory of real optimiser steps of the small configuration (vae_ch 32, VAR
    depth 2, random backbone, perceptual term off) on ``device``, then the activation memory per image of the
    official configuration (stage 2: d20, ch 160, 6 cross blocks, dec_adjust; stage 1: d20, 20 cross blocks) in
    fp32 and bf16, with and without activation checkpointing (``estimate_saved_activations``)."""
    from varformer.config import load_config
    from varformer.losses import VarFormerLoss
    from varformer.training.stages import VarFormerTask, freeze_for
    if stage not in (1, 2):
        raise ValueError(f"stage must be 1 or 2, got {stage}")
    if batch < 1 or steps < 1:
        raise ValueError("need batch >= 1 and steps >= 1")
    gib = 2 ** 30
    lines = []
    if small:
        dev = torch.device(device)
        torch.manual_seed(0)
        model = _stage_model(stage, 2, 32, 2, False)
        freeze_for(model, stage, "official")
        loss_cfg = load_config(None, ["train.loss.perceptual=0"]).train.loss
        task = VarFormerTask(model, VarFormerLoss(loss_cfg, stage, None), stage).to(dev)
        data = {"lq": torch.rand(batch, 3, 256, 256, device=dev), "gt": torch.rand(batch, 3, 256, 256, device=dev)}
        log(f"small stage-{stage} configuration: 1 warm-up + {steps} timed steps")
        cost = measure_step(task, data, precision, steps)
        what = "peak allocated" if dev.type == "cuda" else "peak process RSS"
        lines.append(f"small stage-{stage} step (vae_ch 32, VAR depth 2, batch {batch}, {precision}, {device}): "
                     f"{cost.seconds_per_step:.2f} s/step, {cost.images_per_s:.3f} images/s, {what} "
                     f"{cost.peak_bytes / gib:.2f} GiB (perceptual term off: no VGG19 weights offline)")
    for ckpt in (False, True):
        log(f"official stage-{stage} configuration (fake tensors: nothing computed), activation checkpointing {ckpt}")
        per_image, pb = estimate_saved_activations(stage, 20, 160, 6 if stage == 2 else 20, True, ckpt)
        lines.append(f"official stage-{stage} configuration, activation checkpointing {'on ' if ckpt else 'off'}: "
                     f"saved activations per image {per_image['fp32'] / gib:.1f} GiB fp32, "
                     f"{per_image['bf16'] / gib:.1f} GiB bf16 autocast; weights/grads/Adam/EMA "
                     f"{pb['state_bytes'] / gib:.1f} GiB ({pb['trainable_params'] / 1e6:.0f} M trainable, "
                     f"{pb['frozen_params'] / 1e6:.0f} M frozen); batch 16 on one device: "
                     f"~{(16 * per_image['fp32'] + pb['state_bytes']) / gib:.0f} GiB fp32, "
                     f"~{(16 * per_image['bf16'] + pb['state_bytes']) / gib:.0f} GiB bf16")
    return lines
