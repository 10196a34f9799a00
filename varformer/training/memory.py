"""Memory a training step holds, counted without computing: the activations autograd saves for backward, and
the weights, gradients, Adam states and EMA (``estimate_saved_activations``, ``parameter_bytes``). Used by the
training benchmark and to plan runs (batch per device, activation checkpointing).

The estimate counts the tensors autograd saves during ``training_outputs`` (views counted once, by their base
tensor), i.e. what a step holds between forward and backward, on top of weights, gradients and Adam states (16
bytes per trainable parameter in fp32 + 4 per frozen one).
"""
from __future__ import annotations

from typing import Dict

import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode

from varformer.model import VarFormerSettings, build_varformer
from varformer.training.activation_checkpointing import enable_activation_checkpointing
from varformer.training.stages import freeze_for


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


def parameter_bytes(model: nn.Module) -> Dict[str, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    # fp32 weights + grads + Adam (exp_avg, exp_avg_sq) + EMA shadow for trainable; fp32 weights for frozen
    return {"trainable_params": trainable, "frozen_params": frozen,
            "state_bytes": trainable * 4 * 5 + frozen * 4}


def estimate_saved_activations(settings: VarFormerSettings, checkpointing: bool, formulation: str = "official",
                               precisions=("fp32", "bf16")):
    """({precision: bytes} saved for backward per 256x256 image, ``parameter_bytes``) of a stage's model
    in training mode with the recipe's freezing, counted without computing or allocating: the model is built on
    ``meta``, given uninitialised CPU storage that is never touched, and run on fake CPU tensors, so the kernels
    chosen (and what they save, e.g. flash attention's log-sum-exp rather than the attention map) and autocast are
    those of a real device."""
    with torch.device("meta"):
        model = build_varformer(settings)
    freeze_for(model, settings.stage, formulation)
    pb = parameter_bytes(model)
    model = model.to_empty(device="cpu").train()
    if checkpointing:
        enable_activation_checkpointing(model)
    with FakeTensorMode(allow_non_fake_inputs=True):
        lq = torch.empty(1, 3, 256, 256)
        out = {}
        if "fp32" in precisions:
            out["fp32"] = saved_activation_bytes(model, lq)
        if "bf16" in precisions:
            with torch.autocast("cpu", torch.bfloat16):
                out["bf16"] = saved_activation_bytes(model, lq)
    return out, pb
