"""The one restorer abstraction: what ``varformer restore``, ``varformer evaluate``, the demo and the benchmarks run.

A ``Restorer`` maps a batch (B, 3, H, W) in [0, 1] to the same shape in [0, 1] on one device, under
``torch.inference_mode`` and one precision, and says what it accepts: a fixed square size (VarFormer: 256; callers
tile larger images at native resolution, ``varformer.inference.tiling``) or any size padded to a multiple.

    r = load_restorer("checkpoints/varformer_d16.pt")             # device "auto", precision "auto"
    r = load_restorer("identity")                                  # the degraded input itself (baseline, checks)
    r = model_restorer(model, device="cuda", precision="bf16")     # a model already in memory
    y = r(x)                                                       # inputs moved to r.device; float32 out

``load_restorer`` takes every weights file of every registered method (``varformer.methods.registry``): a model
file (``.pt``/``.safetensors``), a training checkpoint (``ckpt_*.pt``: its EMA weights) or a release the method
reads directly; the method's ``load_model`` builds the model and its ``restorer`` traits say how it runs (a fixed
input size is tiled at native resolution, or resized by a protocol that says so). Any other file gets one line
saying what it is. Precision ``auto`` is ``runtime.resolve_precision``'s: bf16 where the device has native bf16,
else fp32.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Union

import torch
from torch import nn

from varformer.errors import CheckpointMismatchError, ConfigError, WeightsNotFoundError
from varformer.methods import registry
from varformer.methods.api import RestorerTraits
from varformer.runtime import autocast, resolve_device, resolve_precision

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
    traits: RestorerTraits = field(default_factory=RestorerTraits)   # how its method runs it (scale, precision)

    def __call__(self, x_B3HW: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            y = self.fn(x_B3HW.to(self.device, torch.float32))
        return y.float().clamp(0, 1)


def identity_restorer(device: Union[str, torch.device] = "auto") -> Restorer:
    """The degraded input itself: the baseline row of every table, and a check of reading, tiling and writing."""
    return Restorer("identity", lambda x: x, None, 1, resolve_device(device))


def model_restorer(model: nn.Module, device: Union[str, torch.device] = "auto", precision: str = "auto",
                   name: Optional[str] = None, input_size: Optional[int] = None,
                   traits: Optional[RestorerTraits] = None) -> Restorer:
    """A restorer around a module mapping [0, 1] to [0, 1] (a fixed ``input_size``: larger images are tiled; by
    default ``traits.input_size``). ``bf16``: a model with ``prepare_inference`` first holds its bf16-eligible
    weights in bf16 (same outputs as autocast, less memory); any module runs under bf16 autocast. ``auto``: bf16
    where the device has native bf16, else fp32."""
    if traits is None:  # a method's model runs as its method says; any other module as given
        spec = registry.method_of_model(model)
        traits = spec.restorer(model) if spec is not None else RestorerTraits(input_size=input_size)
    input_size = input_size if input_size is not None else traits.input_size
    dev = resolve_device(device)
    precision = resolve_precision(precision, dev)
    model = model.to(dev).eval()
    if precision == "bf16" and hasattr(model, "prepare_inference") and model.weights_precision != "bf16":
        model.prepare_inference("bf16")

    def run(x: torch.Tensor) -> torch.Tensor:
        with autocast(dev, precision):
            return model(x)

    return Restorer(name or type(model).__name__, run, input_size, traits.size_multiple, dev, precision, model,
                    traits)


def resolve_weights(weights: Optional[str]) -> Path:
    """The weights file to load: the given path, or the default method's usual file in ./checkpoints or the
    repository's."""
    default = registry.get(registry.DEFAULT)
    if weights is not None:
        path = Path(weights).expanduser()
        if path.is_file():
            return path
        candidates = [path]
    else:
        candidates = [Path.cwd() / default.default_weights, _REPO_ROOT / default.default_weights]
        for c in candidates:
            if c.is_file():
                return c
    tried = ", ".join(str(c) for c in dict.fromkeys(candidates))
    raise WeightsNotFoundError(f"weights not found (looked for {tried}); {default.release}")


def load_restorer(weights: Optional[str] = None, device: Union[str, torch.device] = "auto",
                  precision: str = "auto", compile_unet: bool = False) -> Restorer:
    """``"identity"``, or a weights file of any method (None: the default method's usual file) as a restorer.

    ``compile_unet``: ``torch.compile`` the model's heavy part where it offers one (``compile_unet``; worth it on
    GPUs; on a CPU the first call compiles for minutes and runs no faster: docs/precision.md)."""
    dev = resolve_device(device)
    precision = resolve_precision(precision, dev)
    if weights == "identity":
        return identity_restorer(dev)
    path = resolve_weights(weights)
    info = registry.inspect_weights(path)
    if info.method is None:
        raise CheckpointMismatchError(f"{path} is {info.describe()}; a restorer is a model file of one of the methods "
                                      f"here ({', '.join(registry.names())}), a training run's final_ema.pt or "
                                      "ckpt_*.pt, or a release its method reads")
    model = info.method.load_model(info)
    if compile_unet:
        if not hasattr(model, "compile_unet"):
            raise ConfigError(f"{path} is {info.describe()}: it has no U-Net to compile")
        model.compile_unet(mode="reduce-overhead" if dev.type == "cuda" else None)
    return model_restorer(model, dev, precision, name=os.path.basename(str(path)),
                          traits=info.method.restorer(model))
