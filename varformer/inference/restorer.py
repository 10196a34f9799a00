"""The one restorer abstraction: what ``varformer restore``, ``varformer evaluate``, the demo and the benchmarks run.

A ``Restorer`` maps a batch (B, 3, H, W) in [0, 1] to (B, 3, sH, sW) in [0, 1] (``s = scale``: 1 for restoration,
4 for a x4 super-resolver) on one device, under ``torch.inference_mode`` and one precision, and says what it
accepts: a fixed square size (VarFormer: 256; callers tile larger images at native resolution,
``varformer.inference.tiling``, or resize them, ``varformer.inference.images``) or any size padded to a multiple.
Its ``network`` is the model at its own resolution: a pre-upsampling super-resolver (``traits.upsample``) runs it
on the input upsampled first. A model with per-image context (``traits.image_context``: e.g. text features of a
prompt or caption) gets one value per image computed from the whole input as read (``contexts_of``), which tiles
and resizes carry along.

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

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, List, Optional, Sequence, Union

import torch
from torch import nn

from varformer.data.resize import resize_pil
from varformer.errors import CheckpointMismatchError, ConfigError, WeightsNotFoundError
from varformer.methods import registry
from varformer.methods.api import RestorerTraits
from varformer.runtime import autocast, resolve_device, resolve_precision

_REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Restorer:
    name: str
    fn: Callable[..., torch.Tensor]              # the network: (B, 3, h, w) in [0, 1] on ``device`` [, contexts]
                                                 # -> (B, 3, network_scale * h, network_scale * w)
    input_size: Optional[int] = None             # fixed square input size (tiled at native resolution); None: any
    size_multiple: int = 1                       # any-size restorers: input padded to a multiple of this
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    precision: str = "fp32"
    model: Optional[nn.Module] = None            # the module behind ``fn``, if there is one
    traits: RestorerTraits = field(default_factory=RestorerTraits)   # how its method runs it (scale, precision)
    image_context: Optional[Callable[[torch.Tensor], Any]] = None    # (3, H, W) input as read -> its context

    @property
    def scale(self) -> int:
        return self.traits.scale

    @property
    def network_scale(self) -> int:
        """Output size / input size of the network itself (1 for a pre-upsampling super-resolver)."""
        return 1 if self.traits.upsample else self.traits.scale

    def contexts_of(self, x_B3HW: torch.Tensor) -> Optional[List[Any]]:
        """One context per image of the batch (None: the restorer takes none)."""
        if self.image_context is None:
            return None
        return [self.image_context(x_3HW) for x_3HW in x_B3HW]

    def upsampled(self, x_B3HW: torch.Tensor) -> torch.Tensor:
        """A pre-upsampling super-resolver's input: every image resized by ``scale`` with its filter."""
        if not self.traits.upsample or self.scale == 1:
            return x_B3HW
        H, W = x_B3HW.shape[-2:]
        return torch.stack([resize_pil(x, (self.scale * H, self.scale * W), self.traits.upsample) for x in x_B3HW])

    def network(self, x_B3HW: torch.Tensor, contexts: Optional[Sequence[Any]] = None) -> torch.Tensor:
        """The network on inputs at its own resolution (tiles, resized images), float32 in [0, 1]."""
        if self.image_context is not None and (contexts is None or len(contexts) != x_B3HW.shape[0]):
            raise ConfigError(f"restorer '{self.name}' needs one context per image (contexts_of the inputs as read)")
        with torch.inference_mode():
            x = x_B3HW.to(self.device, torch.float32)
            y = self.fn(x, list(contexts)) if self.image_context is not None else self.fn(x)
        return y.float().clamp(0, 1)

    def __call__(self, x_B3HW: torch.Tensor, contexts: Optional[Sequence[Any]] = None) -> torch.Tensor:
        """(B, 3, H, W) -> (B, 3, scale*H, scale*W) of same-size images the network takes as they are: contexts
        from these inputs (unless given), the pre-upsampling, the network."""
        if self.image_context is not None and contexts is None:
            contexts = self.contexts_of(x_B3HW)
        return self.network(self.upsampled(x_B3HW), contexts)


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

    def run(x: torch.Tensor, *contexts) -> torch.Tensor:
        with autocast(dev, precision):
            return model(x, *contexts)

    context = getattr(model, "image_context", None) if traits.image_context else None
    if traits.image_context and not callable(context):
        raise ConfigError(f"{type(model).__name__}: its traits ask for image contexts but it has no image_context()")
    return Restorer(name or type(model).__name__, run, input_size, traits.size_multiple, dev, precision, model,
                    traits, context)


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


def with_scale(traits: RestorerTraits, scale: Optional[int], what: str) -> RestorerTraits:
    """The traits at another output scale: pre-upsampling super-resolvers take any integer scale (their network
    runs at the output resolution); a network that upsamples itself has its own scale only."""
    if scale is None or scale == traits.scale:
        return traits
    if not isinstance(scale, int) or scale < 1:
        raise ConfigError(f"--scale must be an integer >= 1, got {scale!r}")
    if traits.upsample is None:
        raise ConfigError(f"{what} outputs x{traits.scale} images; it takes no other --scale (got {scale})")
    return dataclasses.replace(traits, scale=scale)


def load_restorer(weights: Optional[str] = None, device: Union[str, torch.device] = "auto",
                  precision: str = "auto", compile_unet: bool = False, *, scale: Optional[int] = None,
                  prompt: Optional[str] = None) -> Restorer:
    """``"identity"``, or a weights file of any method (None: the default method's usual file) as a restorer.

    ``compile_unet``: ``torch.compile`` the model's heavy part where it offers one (``compile_unet``; worth it on
    GPUs; on a CPU the first call compiles for minutes and runs no faster: docs/precision.md). ``scale``: the output
    scale of a pre-upsampling super-resolver (``identity`` with a scale: PIL bicubic upsampling, the usual
    baseline). ``prompt``: the text prompt of a model that takes one (``traits.text_prompt``)."""
    dev = resolve_device(device)
    precision = resolve_precision(precision, dev)
    if weights == "identity":
        if prompt is not None:
            raise ConfigError("the identity restorer takes no --prompt")
        r = identity_restorer(dev)
        if scale is not None and scale != 1:
            r.traits = with_scale(RestorerTraits(upsample="bicubic"), scale, "identity")
            r.name = f"bicubic x{scale}"
        return r
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
    traits = with_scale(info.method.restorer(model), scale, f"{path} ({info.describe()})")
    if prompt is not None:
        if not traits.text_prompt:
            raise ConfigError(f"{path} is {info.describe()}: it takes no text prompt (--prompt)")
        model.set_prompt(prompt)
    return model_restorer(model, dev, precision, name=os.path.basename(str(path)), traits=traits)
