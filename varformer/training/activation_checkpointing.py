"""Activation checkpointing for training: selected sub-modules keep only their inputs during the forward pass and
recompute their activations in the backward pass, at the cost of about one extra U-Net forward: the official
stage-2 batch of 16 then fits on one 80 GB GPU (docs/training.md has the estimates; ``varformer benchmark
train`` makes them).

The module's own ``forward`` is wrapped in place, so parameter names, state dicts and checkpoints are unchanged.
A model may also provide ``set_grad_checkpointing(True)`` itself; that is preferred when present.
"""
from __future__ import annotations

from typing import Iterable, Tuple, Type

from torch import nn
from torch.utils.checkpoint import checkpoint

from varformer.model.unet import AttnBlock, PriorGuidance, ResnetBlock


def _default_targets() -> Tuple[Type[nn.Module], ...]:
    # the U-Net's memory: res-blocks and attention at 256/128 px, and DAE + AFT (Swin windows, anchor attention)
    return (ResnetBlock, AttnBlock, PriorGuidance)


def _wrap(module: nn.Module) -> None:
    inner = module.forward

    def forward(*args, **kwargs):
        if not module.training or not any(p.requires_grad for p in module.parameters()):
            return inner(*args, **kwargs)
        # non-reentrant: works with inputs that do not require grad and with autocast, keeps RNG state
        return checkpoint(inner, *args, use_reentrant=False, **kwargs)

    module.forward = forward
    module._varformer_checkpointed = True


def enable_activation_checkpointing(model: nn.Module, targets: Iterable[Type[nn.Module]] = ()) -> int:
    """Checkpoint every sub-module of the given types (default: U-Net res-blocks, attention, DAE/AFT);
    returns how many were wrapped."""
    if hasattr(model, "set_grad_checkpointing"):
        model.set_grad_checkpointing(True)
        return sum(1 for _ in model.modules())
    types = tuple(targets) or _default_targets()
    # by default only the U-Net's blocks: the frozen VQVAE is built from the same block classes but never trains
    roots = ([model] if targets else
             [getattr(model, name) for name in ("unet_encoder", "unet_decoder") if hasattr(model, name)])
    n = 0
    for m in (m for root in roots for m in root.modules()):
        if isinstance(m, types) and not getattr(m, "_varformer_checkpointed", False):
            _wrap(m)
            n += 1
    return n
