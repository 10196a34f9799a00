"""VarFormer's training memory, counted without computing (``varformer train --dry-run``, ``varformer benchmark
train``): the stage's model built on the meta device with its recipe's freezing, run on fake tensors
(``varformer.methods.memory``), so the kernels chosen (and what they save, e.g. flash attention's log-sum-exp
rather than the attention map) and autocast are those of a real device."""
from __future__ import annotations

from typing import Dict, Tuple

import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from varformer.methods.activation_checkpointing import enable_activation_checkpointing
from varformer.methods.memory import parameter_bytes, saved_activation_bytes
from varformer.model.settings import VarFormerSettings
from varformer.model.task import checkpointed_unet_modules, freeze_for
from varformer.model.varformer import build_varformer
from varformer.runtime import autocast


def estimate_saved_activations(settings: VarFormerSettings, checkpointing: bool, formulation: str = "official",
                               precisions=("fp32", "bf16")) -> Tuple[Dict[str, int], Dict[str, int]]:
    """({precision: bytes} saved for backward per 256x256 image, ``parameter_bytes``) of a stage's model in
    training mode with the recipe's freezing."""
    with torch.device("meta"):
        model = build_varformer(settings)
    freeze_for(model, settings.stage, formulation)
    pb = parameter_bytes(model)
    model = model.to_empty(device="cpu").train()
    if checkpointing:
        enable_activation_checkpointing(model, checkpointed_unet_modules(model))
    with FakeTensorMode(allow_non_fake_inputs=True):
        lq = torch.empty(1, 3, 256, 256)
        out = {}
        if "fp32" in precisions:
            out["fp32"] = saved_activation_bytes(lambda: model.training_outputs(lq))
        if "bf16" in precisions:
            with autocast(torch.device("cpu"), "bf16"):
                out["bf16"] = saved_activation_bytes(lambda: model.training_outputs(lq))
    return out, pb


def estimate_stage_memory(cfg, stage: int, precision: str) -> Tuple[int, int, Dict[str, int]]:
    """``StageSpec.estimate_memory``: (state bytes, activation bytes per image, parameter counts)."""
    settings = VarFormerSettings.from_config(cfg.model).replace(stage=stage)
    per_image, pb = estimate_saved_activations(settings, cfg.train.grad_checkpointing, cfg.train.loss.formulation,
                                               precisions=(precision,))
    return pb["state_bytes"], per_image[precision], pb
