"""The optimiser and learning-rate schedule of the shared trainer, from the ``train`` config section.

- ``train.optimizer``: ``adam`` (VarFormer's recipes, the default) or ``adamw`` (RestoreVAR's); a task's parameter
  group may carry its own ``weight_decay`` (RestoreVAR: 0.05 on matrices, 0 on vectors, biases and scales);
- ``train.lr_schedule``: ``multistep`` (the default: ``milestones`` x ``gamma``) or ``lin0`` (VAR's per-iteration
  warm-up, hold and linear decay).
"""
from __future__ import annotations

from collections import Counter

from typing import Dict, List

import torch

from varformer.errors import ConfigError

OPTIMIZERS = ("adam", "adamw")
LR_SCHEDULES = ("multistep", "lin0")


def build_optimizer(groups: List[Dict[str, object]], cfg, device: torch.device) -> torch.optim.Optimizer:
    """``train.optimizer`` (Adam, the default, or AdamW) over the task's parameter groups, each at
    ``cfg.lr * lr_scale`` and, where the group says so, its own ``weight_decay`` (else ``cfg.weight_decay``)."""
    groups = [g for g in groups if g["params"]]
    if not groups:
        raise ConfigError("nothing to train: every parameter of the model is frozen")
    for g in groups:
        if g.get("lr_scale", 1.0) <= 0:
            raise ConfigError(f"parameter group '{g['name']}': lr_scale must be > 0, got {g['lr_scale']}")
    name = getattr(cfg, "optimizer", "adam")
    if name not in OPTIMIZERS:
        raise ConfigError(f"train.optimizer must be one of {', '.join(OPTIMIZERS)}, got {name!r}")
    kwargs = dict(lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
    if device.type == "cuda" and cfg.fused_adam:
        kwargs["fused"] = True  # one kernel for the whole update instead of a launch per tensor
    param_groups = []
    for g in groups:
        pg = {"params": list(g["params"]), "lr": cfg.lr * g.get("lr_scale", 1.0), "name": g["name"]}
        if "weight_decay" in g:
            pg["weight_decay"] = float(g["weight_decay"])
        param_groups.append(pg)
    return (torch.optim.Adam if name == "adam" else torch.optim.AdamW)(param_groups, **kwargs)


def lin0_factor(it: int, total: int, warmup: int, warmup_start: float, end: float, hold: float = 0.05) -> float:
    """The learning-rate factor of VAR's ``lin0`` schedule at 0-based iteration ``it`` of ``total`` (official VAR
    utils/lr_control.py, which RestoreVAR uses): linear warm-up from ``warmup_start`` over ``warmup`` iterations,
    then the peak for the first ``hold`` of the rest, then linear decay to ``end`` at the last iteration."""
    if it < warmup:
        return warmup_start + (1 - warmup_start) * it / warmup
    span = total - 1 - warmup
    passed = min((it - warmup) / span, 1.0) if span > 0 else 0.0   # the step after the last one: no negative lr
    if passed < hold:
        return 1.0
    return end + (1 - end) * (1 - passed) / (1 - hold)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg):
    """``train.lr_schedule``: ``multistep`` (the default: ``milestones`` x ``gamma``) or ``lin0`` (per iteration,
    ``warmup_iters`` / ``warmup_start`` / ``lr_end``, over ``total_iters``)."""
    kind = getattr(cfg, "lr_schedule", "multistep")
    if kind == "multistep":
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(cfg.milestones), gamma=cfg.gamma)
    if kind == "lin0":
        if not 0 <= cfg.warmup_iters < cfg.total_iters:
            raise ConfigError(f"train.warmup_iters must be in [0, total_iters), got {cfg.warmup_iters}")
        total, warmup = int(cfg.total_iters), int(cfg.warmup_iters)
        start, end = float(cfg.warmup_start), float(cfg.lr_end)
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: lin0_factor(it, total, warmup, start, end))
    raise ConfigError(f"train.lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {kind!r}")


def scheduler_state(scheduler) -> dict:
    """The scheduler's state with plain containers only: ``MultiStepLR`` keeps its milestones in a
    ``collections.Counter``, which ``torch.load(weights_only=True)`` refuses before torch 2.4."""
    return {k: (dict(v) if isinstance(v, Counter) else v) for k, v in scheduler.state_dict().items()}


def load_scheduler_state(scheduler, state: dict) -> None:
    """``scheduler_state``'s inverse: a value the live scheduler holds as a ``Counter`` becomes one again (its
    missing keys must read as 0)."""
    own = scheduler.__dict__
    scheduler.load_state_dict({k: (Counter(v) if isinstance(own.get(k), Counter) and isinstance(v, dict) else v)
                               for k, v in state.items()})
