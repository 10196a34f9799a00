"""Activation checkpointing for training: the given sub-modules keep only their inputs during the forward pass and
recompute their activations in the backward pass, at the cost of about one extra forward of those modules (for
VarFormer's U-Net, the official stage-2 batch of 16 then fits on one 80 GB GPU: docs/training.md).

Which modules a method checkpoints is the method's choice (``TrainTask.checkpointed_modules``); the module's own
``forward`` is wrapped in place, so parameter names, state dicts and checkpoints are unchanged. A model may also
provide ``set_grad_checkpointing(True)`` itself; that is preferred when present.
"""
from __future__ import annotations

from typing import Iterable

from torch import nn
from torch.utils.checkpoint import checkpoint


def _wrap(module: nn.Module) -> None:
    inner = module.forward

    def forward(*args, **kwargs):
        if not module.training or not any(p.requires_grad for p in module.parameters()):
            return inner(*args, **kwargs)
        # non-reentrant: works with inputs that do not require grad and with autocast, keeps RNG state
        return checkpoint(inner, *args, use_reentrant=False, **kwargs)

    module.forward = forward
    module._checkpointed = True


def enable_activation_checkpointing(model: nn.Module, modules: Iterable[nn.Module]) -> int:
    """Checkpoint each of ``modules`` (sub-modules of ``model``) once; returns how many were wrapped."""
    if hasattr(model, "set_grad_checkpointing"):
        model.set_grad_checkpointing(True)
        return sum(1 for _ in model.modules())
    n = 0
    for m in modules:
        if not getattr(m, "_checkpointed", False):
            _wrap(m)
            n += 1
    return n
