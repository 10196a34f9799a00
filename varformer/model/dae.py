"""Degradation-Aware Enhancement (DAE): the official ``WPMoudle4_norm`` and ``RACMoudle2`` / ``RcaMoudle4``
(docs/architecture.md, steps 5 and 7).

Part 1, ``ScaleSelection`` (official ``cat_rec_syn`` / ``WPMoudle4_norm``): from the bridge feature, 10 softmax
weights over the VAR scale priors; the weighted priors are instance-normalised, projected to the level's width and
upsampled to the level's size. Part 2, ``RegionFusion`` (official ``DAE`` / ``RACMoudle2``, ``RcaMoudle4``): a
per-pixel softmax over two channels blends the U-Net feature and the projected prior.

The two small softmax heads run in float32 even under autocast (their logits decide the blend).

Ablation (docs/ablations.md): ``ScaleSelection(adaptive=False)`` is the paper's "VAR prior with fixed scale
weights": no RSTBs and no weight head, every scale weighted 1/10; the normalisation, projection and upsampling that
bring the priors to the level are the same modules.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from varformer.runtime import fp32_region
from varformer.backbone.swin import RSTB


def _fp32_conv1x1(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    with fp32_region(x.device):
        return F.conv2d(x.float(), conv.weight.float(), conv.bias.float())


class ScaleSelection(nn.Module):
    """Degradation-aware choice of scale priors. ``g`` (B, dim_in, H, W), ``priors`` (B, S, Cp, 16, 16)
    -> prior map (B, dim_out, H, W) with H = 16 * up_factor, and the scale weights (B, S).
    ``adaptive=False``: fixed uniform weights 1/S, ``g`` unused (may be None)."""

    def __init__(self, dim_in: int, dim_out: int, up_factor: int, heads: int, n_scales: int = 10,
                 prior_channels: int = 32, adaptive: bool = True):
        super().__init__()
        self.up_factor = up_factor
        self.rstbs = nn.ModuleList(RSTB(dim_in, heads) for _ in range(2 if adaptive else 0))
        self.to_weights = nn.Conv2d(dim_in, n_scales, 1) if adaptive else None
        self.proj = nn.Conv2d(n_scales * prior_channels, dim_out, 1)
        self.upsample_conv = (nn.Conv2d(dim_out, dim_out, 3, padding=1) if up_factor > 1
                              else None)

    def forward(self, g_BCHW: Optional[torch.Tensor], priors_BSCHW: torch.Tensor
                ) -> Tuple[torch.Tensor, torch.Tensor]:
        B, S, Cp, h, w = priors_BSCHW.shape
        if self.to_weights is None:
            weights_BS = priors_BSCHW.new_full((B, S), 1.0 / S, dtype=torch.float32)
        else:
            s = g_BCHW
            for rstb in self.rstbs:
                s = rstb(s)
            # mean over pixels commutes with the 1x1 conv: pool first (exact up to rounding, HW times cheaper)
            logits_BS = _fp32_conv1x1(self.to_weights, s.mean(dim=(2, 3), keepdim=True)).flatten(1)
            weights_BS = logits_BS.softmax(dim=1)
        q = (weights_BS[:, :, None, None, None] * priors_BSCHW.float()).reshape(B, S * Cp, h, w)
        q = F.instance_norm(q, eps=1e-5)
        prior = self.proj(q)
        if self.upsample_conv is not None:
            prior = self.upsample_conv(F.interpolate(prior, scale_factor=self.up_factor, mode="nearest"))
        return prior, weights_BS


class RegionFusion(nn.Module):
    """Region-adaptive fusion: out = a0 * h + a1 * prior with a = softmax over 2 channels per pixel, the logits
    from two RSTBs on concat(h, prior)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.rstbs = nn.ModuleList(RSTB(2 * dim, heads) for _ in range(2))
        self.to_logits = nn.Conv2d(2 * dim, 2, 1)

    def forward(self, h_BCHW: torch.Tensor, prior_BCHW: torch.Tensor) -> torch.Tensor:
        s = torch.cat([h_BCHW, prior_BCHW], dim=1)
        for rstb in self.rstbs:
            s = rstb(s)
        a = _fp32_conv1x1(self.to_logits, s).softmax(dim=1)
        out = a[:, 0:1] * h_BCHW.float() + a[:, 1:2] * prior_BCHW.float()
        return out.to(h_BCHW.dtype)
