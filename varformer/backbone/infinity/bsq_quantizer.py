"""Binary spherical quantisation and Infinity's multi-scale residual quantiser over it (official
infinity/models/bsq_vae/multiscale_bsq.py ``BSQ`` with ``new_quant=True``, and VARestorer's
infinity/models/bitwise_self_correction.py ``flip_requant`` / ``long_flip_requant`` without bit flips, the
inference setting). No parameters; everything runs in float32.

BSQ of a d-channel vector v: ``u = v / |v|``, ``q = sign(u) / sqrt(d)`` (+1 only for u > 0; straight-through
``u + (q - u).detach()``), bit = ``q > 0``; codes from bits: ``l2norm(bit * 2 / sqrt(d) - 1 / sqrt(d))``.

Residual pyramid of a latent f (B, d, G, G) over the square scales ``pn_0 .. pn_{K-1} = G``::

    cum = 0
    for k: r = f - cum;  r = area_down(r, pn_k) unless k = K-1;  q_k, bits_k = bsq(r)
           cum += trilinear_up(q_k, G)
           input of scale k+1 = trilinear(cum, pn_{k+1})            (k < K-1: the teacher-forcing input)
    long input: the teacher-forcing inputs of scales 1..K-1 + cum itself at G x G (the extra block)

Interpolations act on (B, d, 1, h, w) volumes, as the official code's (``area`` is an adaptive average pool,
``trilinear`` with ``align_corners=False``). Tokens are flattened row-major: (B, d, 1, h, w) -> (B, h*w, d).

    x_BLd, bits = residual_pyramid(h_BdGG, patch_nums, long_input=True)   # (B, 3544, 32) at 512 px
    z_BdGG = summed_codes(bits, patch_nums)        # the decoder's input from per-scale bits (B, h, w, d) in {0, 1}
"""
from __future__ import annotations

from typing import List, Sequence, Tuple

import torch
import torch.nn.functional as F


def bsq_quantize(z_BdThw: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """(quantised (B, d, T, h, w) with straight-through gradients, bits (B, T, h, w, d) bool)."""
    u = F.normalize(z_BdThw.float().movedim(1, -1), dim=-1)
    d = u.shape[-1]
    sign = torch.where(u > 0, torch.ones((), device=u.device), -torch.ones((), device=u.device))
    q = u + (sign * (1.0 / d ** 0.5) - u).detach()
    return q.movedim(-1, 1), q > 0


def codes_from_bits(bits_Bhwd: torch.Tensor) -> torch.Tensor:
    """Bits (B, h, w, d) in {0, 1} -> unit codes (B, d, 1, h, w) (official ``indices_to_codes(bit_label)``)."""
    d = bits_Bhwd.shape[-1]
    scale = 1 / d ** 0.5
    codes = F.normalize(bits_Bhwd.float() * scale * 2 - scale, dim=-1)
    return codes.movedim(-1, 1).unsqueeze(2)


def _flatten(t_BdThw: torch.Tensor) -> torch.Tensor:
    return t_BdThw.reshape(*t_BdThw.shape[:2], -1).permute(0, 2, 1)


def residual_pyramid(h_BdGG: torch.Tensor, patch_nums: Sequence[int], long_input: bool
                     ) -> Tuple[torch.Tensor, List[torch.Tensor]]:
    """(transformer input (B, sum_{k>=1} pn_k^2 [+ G^2], d), per-scale bits (B, pn, pn, d) bool) of a latent."""
    B, d, H, W = h_BdGG.shape
    if (H, W) != (patch_nums[-1], patch_nums[-1]):
        raise ValueError(f"latent of {H}x{W} does not end the schedule {tuple(patch_nums)}")
    f = h_BdGG.float()[:, :, None]
    full = (1, H, W)
    cum = torch.zeros_like(f)
    inputs, bits = [], []
    K = len(patch_nums)
    for k, pn in enumerate(patch_nums):
        r = f - cum
        if k < K - 1:
            r = F.interpolate(r, size=(1, pn, pn), mode="area")
        q, b = bsq_quantize(r)
        bits.append(b[:, 0])
        cum = cum + F.interpolate(q, size=full, mode="trilinear")
        if k < K - 1:
            nxt = patch_nums[k + 1]
            inputs.append(_flatten(F.interpolate(cum, size=(1, nxt, nxt), mode="trilinear")))
        elif long_input:
            inputs.append(_flatten(F.interpolate(cum, size=(1, pn, pn), mode="trilinear")))
    return torch.cat(inputs, dim=1), bits


def summed_codes(bits: Sequence[torch.Tensor], patch_nums: Sequence[int]) -> torch.Tensor:
    """The decoder input (B, d, G, G): every scale's codes upsampled (trilinear) to G x G and summed; the last
    scale's codes are added as they are (official ``logits_to_img``)."""
    if len(bits) != len(patch_nums):
        raise ValueError(f"{len(bits)} bit maps for {len(patch_nums)} scales")
    G = patch_nums[-1]
    total = None
    for k, (b, pn) in enumerate(zip(bits, patch_nums)):
        if tuple(b.shape[1:3]) != (pn, pn):
            raise ValueError(f"bits of scale {k} are {tuple(b.shape)}, expected (B, {pn}, {pn}, d)")
        codes = codes_from_bits(b)
        if k != len(patch_nums) - 1:
            codes = F.interpolate(codes, size=(1, G, G), mode="trilinear")
        total = codes if total is None else total + codes
    return total.squeeze(2)
