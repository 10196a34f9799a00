"""Bits from Infinity's bitwise logits, the way VARestorer's release draws them (official infinity/models/infinity.py
``BInfinity.logits_to_img`` + ``GumbelArgmax``), and a deterministic argmax alternative.

The logits of one pass (B, L, 2d) are split by scale; each scale's (B, h*w, 2d) is read as (B, h*w*d, 2): the two
logits of every bit. Per scale, coarse to fine, the release draws ``U = torch.rand((B, h*w*d, 2))`` from the
**global CPU generator** (then moves it to the logits' device), perturbs ``y = softmax((logits - log(-log(U + 1e-20)
+ 1e-20)) / 0.5)`` and takes the one-hot of its argmax; the bit is that one-hot's second entry. That is an exact
Bernoulli(softmax(l0, l1)[1]) sample per bit (temperature 1; tau changes nothing in the hard sample). With
``torch.manual_seed(s)`` just before, and no other use of the CPU generator in between, the draws are the
release's draws. ``straight_through=True`` returns ``y_hard - y_soft.detach() + y_soft`` (the release's value,
equal to the hard bit up to rounding, with the soft gradient) for training through the decoder.

    bits = sample_bits(logits_BLV, patch_nums)                  # list of (B, pn, pn, d) float in {0, 1}
    bits = sample_bits(logits_BLV, patch_nums, argmax=True)     # deterministic (not in the release)
"""
from __future__ import annotations

from typing import List, Sequence

import torch
import torch.nn.functional as F

GUMBEL_TAU = 0.5          # the release's Gumbel temperature (no effect on the hard sample)
GUMBEL_EPS = 1e-20


def split_scales(logits_BLV: torch.Tensor, patch_nums: Sequence[int]) -> List[torch.Tensor]:
    sizes = [p * p for p in patch_nums]
    if logits_BLV.shape[1] != sum(sizes):
        raise ValueError(f"logits of {logits_BLV.shape[1]} positions for a schedule of {sum(sizes)}")
    return list(torch.split(logits_BLV, sizes, dim=1))


def gumbel_one_hot(logits_BN2: torch.Tensor, tau: float = GUMBEL_TAU, straight_through: bool = False
                   ) -> torch.Tensor:
    """The release's ``GumbelArgmax``: one ``torch.rand`` of the logits' shape on the CPU generator."""
    U = torch.rand(logits_BN2.shape).to(logits_BN2.device)
    gumbel = -torch.log(-torch.log(U + GUMBEL_EPS) + GUMBEL_EPS)
    y_soft = F.softmax((logits_BN2 + gumbel) / tau, dim=-1)
    index = y_soft.max(dim=-1, keepdim=True)[1]
    y_hard = torch.zeros_like(logits_BN2).scatter_(-1, index, 1.0)
    return y_hard - y_soft.detach() + y_soft if straight_through else y_hard


def sample_bits(logits_BLV: torch.Tensor, patch_nums: Sequence[int], argmax: bool = False,
                straight_through: bool = False) -> List[torch.Tensor]:
    """Per scale (B, pn, pn, d) float bits from float32 logits (B, L, 2d), coarse to fine."""
    B = logits_BLV.shape[0]
    out = []
    for logits, pn in zip(split_scales(logits_BLV.float(), patch_nums), patch_nums):
        pairs = logits.reshape(B, -1, 2)
        if argmax:
            one_hot = F.one_hot(pairs.argmax(dim=-1), 2).to(pairs.dtype)
        else:
            one_hot = gumbel_one_hot(pairs, straight_through=straight_through)
        out.append(one_hot[..., 1].reshape(B, pn, pn, -1))
    return out
