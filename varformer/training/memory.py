"""Cost of one training step: measured images/s and peak memory on a real device, and an analytic estimate of
the activation memory of the full configuration on the ``meta`` device (no memory is allocated there).

The estimate counts the tensors autograd saves for backward during ``training_outputs`` (views counted once,
by their base tensor), i.e. what a step holds between forward and backward, on top of weights, gradients and
Adam states (16 bytes per trainable parameter in fp32 + 4 per frozen one).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Dict

import torch
from torch import nn


def saved_activation_bytes(model: nn.Module, lq: torch.Tensor) -> int:
    """Bytes autograd keeps for backward after ``model.training_outputs(lq)`` (works on ``meta``)."""
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
