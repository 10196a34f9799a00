"""Precision helper: the parts the spec keeps in float32 (tokenizer, code search, codebook lookups, logits and the
softmax-weight heads) run inside ``fp32_region`` even when the caller enables bf16 autocast."""
from __future__ import annotations

import contextlib

import torch


def fp32_region(device: torch.device):
    """Autocast disabled on CPU/CUDA; a no-op elsewhere (e.g. the meta device, used for FLOP counting)."""
    if device.type in ("cpu", "cuda"):
        return torch.autocast(device_type=device.type, enabled=False)
    return contextlib.nullcontext()
