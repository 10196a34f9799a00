"""Memory a training step holds, counted without computing: the activations autograd saves for backward and the
weights, gradients, Adam states and EMA. A method's ``StageSpec.estimate_memory`` builds its model on the meta
device and counts with these (``varformer train --dry-run`` prints the result).

Activations are the tensors autograd saves during a forward (views counted once, by their base tensor), i.e.
what a step holds between forward and backward, on top of weights, gradients and Adam states (20 bytes per
trainable parameter in fp32 with its EMA, 4 per frozen one).
"""
from __future__ import annotations

from typing import Callable, Dict

import torch
from torch import nn


def saved_activation_bytes(forward: Callable[[], object]) -> int:
    """Bytes autograd keeps for backward after ``forward()`` (works on ``meta`` and fake tensors)."""
    seen: Dict[int, int] = {}
    keep = []

    def pack(t: torch.Tensor):
        base = t._base if t._base is not None else t
        if not isinstance(base, nn.Parameter):  # weights are counted as model state, not activations
            seen[id(base)] = base.numel() * base.element_size()
            keep.append(base)  # keeps the ids unique while counting
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        forward()
    return sum(seen.values())


def parameter_bytes(model: nn.Module) -> Dict[str, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    # fp32 weights + grads + Adam (exp_avg, exp_avg_sq) + EMA shadow for trainable; fp32 weights for frozen
    return {"trainable_params": trainable, "frozen_params": frozen,
            "state_bytes": trainable * 4 * 5 + frozen * 4}
