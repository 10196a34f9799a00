"""Exponential moving average of the trainable parameters (official: decay 0.998 after every step).

Only parameters are averaged (buffers are copied as they are, as in the official code); frozen parameters never
change, so they are not shadowed. The EMA copy is what validation, the final export and evaluation use.
"""
from __future__ import annotations

import contextlib
from typing import Dict, Iterator

import torch
from torch import nn

from varformer.errors import CheckpointMismatchError


class ModelEMA:
    def __init__(self, model: nn.Module, decay: float = 0.998):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = float(decay)
        self.names = [n for n, p in model.named_parameters() if p.requires_grad]
        params = dict(model.named_parameters())
        # fp32 shadows whatever the training dtype: 0.2 % steps are below bf16 resolution.
        self.shadow = [params[n].detach().clone().float() for n in self.names]

    def _live(self, model: nn.Module):
        params = dict(model.named_parameters())
        return [params[n] for n in self.names]

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """``ema = decay * ema + (1 - decay) * param`` for every trainable parameter (one fused foreach op)."""
        live = [p.detach().float() if p.dtype != torch.float32 else p.detach() for p in self._live(model)]
        torch._foreach_lerp_(self.shadow, live, 1.0 - self.decay)

    def state_dict(self) -> Dict[str, torch.Tensor]:
        return {n: t.clone() for n, t in zip(self.names, self.shadow)}

    def load_state_dict(self, state: Dict[str, torch.Tensor]) -> None:
        if set(state) != set(self.names):
            missing = sorted(set(self.names) - set(state))
            extra = sorted(set(state) - set(self.names))
            raise CheckpointMismatchError(f"EMA state does not match the trainable parameters: "
                                          f"missing {missing[:5]}, unexpected {extra[:5]}")
        for i, n in enumerate(self.names):
            self.shadow[i].copy_(state[n])

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        for p, s in zip(self._live(model), self.shadow):
            p.copy_(s)

    @contextlib.contextmanager
    def swapped_in(self, model: nn.Module) -> Iterator[nn.Module]:
        """Temporarily put the EMA weights into ``model`` (for validation), restoring the live weights after."""
        live = self._live(model)
        backup = [p.detach().clone() for p in live]
        self.copy_to(model)
        try:
            yield model
        finally:
            with torch.no_grad():
                for p, b in zip(live, backup):
                    p.copy_(b)
