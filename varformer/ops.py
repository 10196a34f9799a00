"""Linear layers that run on oneDNN on the CPU in float32 inference, with the activation fused in.

    y = linear(x, weight, bias)                        # F.linear, or oneDNN's fused kernel (see below)
    y = linear(x, weight, bias, activation="gelu")     # GELU (erf) fused; "gelu_tanh": the tanh approximation
    layer = Linear(c_in, c_out)                        # nn.Linear (same parameters and keys) calling linear()

PyTorch's float32 CPU linear goes through MKL's sgemm. oneDNN's matmul (``torch.ops.mkldnn._linear_pointwise``,
the kernel ``torch.compile`` uses on CPU) is faster on the shapes this project runs, and fuses the activation:
the skinny products of the VAR scale loop at batch 1 stream the weights about twice as fast, and the large ones
(Swin MLPs, the VAR's last scales) reach a higher rate; GELU then costs no extra pass over the activations
(docs/precision.md has the measurements). Outputs equal F.linear's to float32 rounding.

The oneDNN path is taken only where it is exact to compute the same function: a CPU, float32 operands, no
autocast (bf16 autocast casts F.linear's operands; oneDNN's op is not on autocast's lists) and no autograd graph
(the op has no backward here). Everything else, training included, runs F.linear unchanged.
``VARFORMER_CPU_LINEAR=aten`` (or ``use_onednn_linear(False)``) turns the oneDNN path off.
"""
from __future__ import annotations

import contextlib
import os
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

ACTIVATIONS = (None, "gelu", "gelu_tanh")
_ONEDNN = {"gelu": ("gelu", "none"), "gelu_tanh": ("gelu", "tanh"), None: ("none", "")}
_enabled = (os.environ.get("VARFORMER_CPU_LINEAR", "onednn") != "aten"
            and hasattr(torch.ops.mkldnn, "_linear_pointwise") and torch.backends.mkldnn.is_available())


def use_onednn_linear(enable: bool) -> bool:
    """Turn the oneDNN path on or off (where this build has it); returns the previous setting."""
    global _enabled
    previous = _enabled
    _enabled = bool(enable) and hasattr(torch.ops.mkldnn, "_linear_pointwise") and torch.backends.mkldnn.is_available()
    return previous


@contextlib.contextmanager
def aten_linear():
    """Within: every ``linear`` runs ``F.linear`` (the benchmark's official-style reference runs PyTorch's default
    kernels, as the official code does)."""
    previous = use_onednn_linear(False)
    try:
        yield
    finally:
        use_onednn_linear(previous)


def _cpu_autocast_enabled() -> bool:
    try:
        return torch.is_autocast_enabled("cpu")
    except TypeError:  # torch < 2.4: no device argument
        return torch.is_autocast_cpu_enabled()


def _onednn_applies(x: torch.Tensor, weight: torch.Tensor) -> bool:
    return (_enabled and x.device.type == "cpu" and x.dtype == torch.float32 and weight.dtype == torch.float32
            and not torch.is_grad_enabled() and not _cpu_autocast_enabled())


def linear(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None,
           activation: Optional[str] = None) -> torch.Tensor:
    """``activation(x @ weight.T + bias)`` with ``activation`` None, ``"gelu"`` (erf) or ``"gelu_tanh"``."""
    if _onednn_applies(x, weight):
        attr, algorithm = _ONEDNN[activation]
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, attr, [], algorithm)
    y = F.linear(x, weight, bias)
    if activation is None:
        return y
    return F.gelu(y, approximate="tanh" if activation == "gelu_tanh" else "none")


class Linear(nn.Linear):
    """``nn.Linear`` (same parameters, same state-dict keys) computed by ``linear`` with an optional fused
    activation."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, activation: Optional[str] = None):
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
        super().__init__(in_features, out_features, bias=bias)
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias, self.activation)

    def extra_repr(self) -> str:
        return super().extra_repr() + (f", activation={self.activation}" if self.activation else "")
