"""The one restorer abstraction: what ``varformer restore``, ``varformer evaluate``, the demo and the benchmarks run.

A ``Restorer`` maps a batch (B, 3, H, W) in [0, 1] to the same shape in [0, 1] on one device, under
``torch.inference_mode`` and one precision, and says what it accepts: a fixed square size (VarFormer: 256; callers
tile larger images at native resolution, ``varformer.inference.tiling``) or any size padded to a multiple.

    r = load_restorer("checkpoints/varformer_d16.pt")             # device "auto", precision "auto"
    r = load_restorer("identity")                                  # the degraded input itself (baseline, checks)
    r = model_restorer(model, device="cuda", precision="bf16")     # a model already in memory
    y = r(x)                                                       # inputs moved to r.device; float32 out

``load_restorer`` takes every weights file of this project: our VarFormer checkpoints (``.pt``/``.safetensors``), a
training checkpoint (``ckpt_*.pt``: its EMA weights), the official BasicSR file (converted on the fly) and our
RestoreVAR checkpoints (told apart by their ``format`` marker; a RestoreVAR restorer takes 512x512 inputs, so
callers resize -- the restorevar protocol -- or tile); any other file gets one line saying what it is and which
file to use (``varformer.model.weights_files``). Precision ``auto`` is ``runtime.resolve_precision``'s: bf16 where
the device has native bf16, else fp32.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Union

import torch
from torch import nn

from varformer.errors import ConfigError, WeightsNotFoundError
from varformer.model.weights_files import load_model_file
from varformer.restorevar import checkpoint_format, load_restorevar
from varformer.runtime import autocast, resolve_device, resolve_precision

DEFAULT_WEIGHTS = "checkpoints/varformer_d16.pt"
MODEL_INPUT_SIZE = 256
_REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Restorer:
    name: str
    fn: Callable[[torch.Tensor], torch.Tensor]   # (B, 3, H, W) in [0, 1] on ``device`` -> same shape
    input_size: Optional[int] = None             # fixed square input size (tiled at native resolution); None: any
    size_multiple: int = 1                       # any-size restorers: input padded to a multiple of this
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    precision: str = "fp32"
    model: Optional[nn.Module] = None            # the module behind ``fn``, if there is one

    def __call__(self, x_B3HW: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            y = self.fn(x_B3HW.to(self.device, torch.float32))
        return y.float().clamp(0, 1)


def identity_restorer(device: Union[str, torch.device] = "auto") -> Restorer:
    """The degraded input itself: the baseline row of every table, and a check of reading, tiling and writing."""
    return Restorer("identity", lambda x: x, None, 1, resolve_device(device))


def model_restorer(model: nn.Module, device: Union[str, torch.device] = "auto", precision: str = "auto",
                   name: Optional[str] = None, input_size: Optional[int] = MODEL_INPUT_SIZE) -> Restorer:
    """A restorer around a module mapping [0, 1] to [0, 1]. ``bf16``: a VarFormer first holds its bf16-eligible
    weights in bf16 (``prepare_inference``: same outputs as autocast, less memory); any module runs under bf16
    autocast. ``auto``: bf16 where the device has native bf16, else fp32."""
    dev = resolve_device(device)
    precision = resolve_precision(precision, dev)
    model = model.to(dev).eval()
    if precision == "bf16" and hasattr(model, "prepare_inference") and model.weights_precision != "bf16":
        model.prepare_inference("bf16")

    def run(x: torch.Tensor) -> torch.Tensor:
        with autocast(dev, precision):
            return model(x)

    return Restorer(name or type(model).__name__, run, input_size, 1, dev, precision, model)


def resolve_weights(weights: Optional[str]) -> Path:
    """The checkpoint file to load: the given path, or the default name in ./checkpoints or the repository's."""
    if weights is not None:
        path = Path(weights).expanduser()
        if path.is_file():
            return path
        candidates = [path]
    else:
        candidates = [Path.cwd() / DEFAULT_WEIGHTS, _REPO_ROOT / DEFAULT_WEIGHTS]
        for c in candidates:
            if c.is_file():
                return c
    tried = ", ".join(str(c) for c in dict.fromkeys(candidates))
    raise WeightsNotFoundError(
        f"VarFormer weights not found (looked for {tried}). Download the released model (net_g_last.pth from "
        f"Hugging Face wsy541/VarFormer) into checkpoints/, convert it with "
        f"'varformer convert official checkpoints/net_g_last.pth -o {DEFAULT_WEIGHTS}', "
        f"then pass --weights {DEFAULT_WEIGHTS} (the default).")


def load_restorer(weights: Optional[str] = None, device: Union[str, torch.device] = "auto",
                  precision: str = "auto", compile_unet: bool = False) -> Restorer:
    """``"identity"``, or a weights file (None: the default ``checkpoints/varformer_d16.pt``) as a restorer: a
    VarFormer (256x256 input) or, for a RestoreVAR checkpoint, a RestoreVAR (its image size, 512 when released).

    ``compile_unet``: ``torch.compile`` the U-Net (worth it on GPUs, where it fuses the norm/activation chains; on
    a CPU the first call compiles for minutes and runs no faster: docs/precision.md)."""
    dev = resolve_device(device)
    precision = resolve_precision(precision, dev)
    if weights == "identity":
        return identity_restorer(dev)
    path = resolve_weights(weights)
    if checkpoint_format(path) == "restorevar":
        if compile_unet:
            raise ConfigError(f"{path} is a RestoreVAR model: there is no U-Net to compile")
        model = load_restorevar(str(path))
        return model_restorer(model, dev, precision, name=os.path.basename(str(path)), input_size=model.image_size)
    model = load_model_file(str(path), expect_stage=2)
    if compile_unet:
        if not hasattr(model, "compile_unet"):
            raise ConfigError(f"{path} is not a stage-2 VarFormer: there is no U-Net to compile")
        model.compile_unet(mode="reduce-overhead" if dev.type == "cuda" else None)
    return model_restorer(model, dev, precision, name=os.path.basename(str(path)))
