"""Multi-scale residual quantizer of VAR's VQVAE (`quantize.*` keys), with the shared phi convolutions.

A latent `f` (B, Cvae, 16, 16) is tokenised coarse to fine: at scale `si` the running residual is area-downsampled
to `pn x pn`, each cell takes its nearest codebook row, the chosen rows are bicubic-upsampled back to 16x16,
blended through phi (`(1 - r) z + r conv3x3(z)`) and added to `f_hat` (and taken off the residual).

Everything here runs in float32 with autocast disabled: near-ties of the code search and the f_hat accumulation
are precision-sensitive.

Step-wise pieces for autoregressive callers (VAR sampling, VarFormer's greedy rollout):
- `embed_tokens(idx_Bl, si)`: (B, pn^2) indices -> (B, Cvae, pn, pn) codebook rows;
- `scale_residual(h_BChw, si)`: phi(up(h)) -> (B, Cvae, 16, 16), the scale's contribution to f_hat
  (VarFormer's per-scale "prior");
- `next_scale_tokens(f_hat, si)`: area-downsample f_hat to scale si+1 -> (B, pn_{si+1}^2, Cvae) tokens, the
  input of the next VAR step.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.distributed as tdist
import torch.nn as nn
import torch.nn.functional as F

from varformer.runtime import fp32_region


def phi_index_table(num_phi: int, num_scales: int) -> list[int]:
    """Which of the `num_phi` shared phi convs each scale uses: the phi whose tick is nearest to si/(SN-1).

    The ticks are computed with NumPy's float64 `linspace` on purpose: for 4 phis and 10 scales, scales 2 and 7
    lie exactly halfway between two ticks and the official checkpoints rely on how that rounding breaks the ties
    (the table for (4, 10) is 0 0 1 1 1 2 2 3 3 3)."""
    if num_phi < 1 or num_scales < 1:
        raise ValueError(f"need at least one phi and one scale, got num_phi={num_phi}, num_scales={num_scales}")
    if num_phi == 4:
        ticks = np.linspace(1 / 3 / num_phi, 1 - 1 / 3 / num_phi, num_phi)
    else:
        ticks = np.linspace(1 / 2 / num_phi, 1 - 1 / 2 / num_phi, num_phi)
    denom = max(num_scales - 1, 1)
    return [int(np.argmin(np.abs(ticks - si / denom))) for si in range(num_scales)]


class Phi(nn.Conv2d):
    """3x3 conv blended with its input: `(1 - ratio) * z + ratio * conv(z)` (keys `weight`, `bias`)."""

    def __init__(self, channels: int, ratio: float):
        super().__init__(channels, channels, kernel_size=3, stride=1, padding=1)
        self.ratio = abs(ratio)

    def forward(self, z_BChw: torch.Tensor) -> torch.Tensor:
        return z_BChw.mul(1 - self.ratio) + super().forward(z_BChw).mul_(self.ratio)


class SharedPhis(nn.Module):
    """K phi convs shared by the scales (`quant_resi.qresi_ls.{k}.*`); `phis.for_scale(si)` picks one."""

    def __init__(self, channels: int, ratio: float, num_phi: int, num_scales: int):
        super().__init__()
        self.qresi_ls = nn.ModuleList([Phi(channels, ratio) for _ in range(num_phi)])
        self.index_per_scale = phi_index_table(num_phi, num_scales)

    def for_scale(self, si: int) -> Phi:
        return self.qresi_ls[self.index_per_scale[si]]




class MultiScaleQuantizer(nn.Module):
    """Residual quantizer over `patch_nums` scales with a `vocab_size x Cvae` codebook (`embedding`)."""

    def __init__(self, vocab_size: int = 4096, Cvae: int = 32, patch_nums: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16),
                 share_quant_resi: int = 4, quant_resi: float = 0.5, beta: float = 0.25):
        super().__init__()
        if not 2 <= share_quant_resi <= len(patch_nums):
            raise ValueError(f"share_quant_resi must be in [2, {len(patch_nums)}] (shared phi convs), "
                             f"got {share_quant_resi}")
        if list(patch_nums) != sorted(patch_nums) or len(set(patch_nums)) != len(patch_nums):
            raise ValueError(f"patch_nums must be strictly increasing, got {patch_nums}")
        self.vocab_size, self.Cvae, self.beta = vocab_size, Cvae, beta
        self.patch_nums = tuple(int(p) for p in patch_nums)
        self.quant_resi = SharedPhis(Cvae, quant_resi, share_quant_resi, len(patch_nums))
        self.embedding = nn.Embedding(vocab_size, Cvae)
        # monitoring only: EMA of codebook hits per scale, updated in distributed training (see `forward`)
        self.register_buffer('ema_vocab_hit_SV', torch.zeros(len(patch_nums), vocab_size))
        self.record_hit = 0

    # ------------------------------------------------------------------ resampling and single steps
    @property
    def num_scales(self) -> int:
        return len(self.patch_nums)

    def _down(self, f_BChw: torch.Tensor, pn: int) -> torch.Tensor:
        if f_BChw.shape[-1] == pn:
            return f_BChw
        return F.interpolate(f_BChw, size=(pn, pn), mode='area')

    def embed_tokens(self, idx_Bl: torch.Tensor, si: int) -> torch.Tensor:
        """(B, pn^2) code indices of scale si -> (B, Cvae, pn, pn) codebook rows (row-major token order)."""
        pn = self.patch_nums[si]
        return self.embedding(idx_Bl).transpose(1, 2).reshape(idx_Bl.shape[0], self.Cvae, pn, pn)

    def scale_residual(self, h_BChw: torch.Tensor, si: int) -> torch.Tensor:
        """Contribution of scale si to f_hat: phi(bicubic-up(h)) (no resize at the last scale)."""
        if si == self.num_scales - 1:
            return self.quant_resi.for_scale(si)(h_BChw)
        side = self.patch_nums[-1]
        up = F.interpolate(h_BChw, size=(side, side), mode='bicubic', align_corners=False)
        return self.quant_resi.for_scale(si)(up)

    def next_scale_tokens(self, f_hat_BChw: torch.Tensor, si: int) -> torch.Tensor:
        """Area-downsample f_hat (after scale si) to scale si+1: (B, pn_{si+1}^2, Cvae) row-major tokens."""
        pn = self.patch_nums[si + 1]
        return self._down(f_hat_BChw, pn).flatten(2).transpose(1, 2)

    def _check_latent(self, f_BChw: torch.Tensor) -> None:
        side = self.patch_nums[-1]
        if f_BChw.ndim != 4 or f_BChw.shape[1] != self.Cvae or tuple(f_BChw.shape[-2:]) != (side, side):
            raise ValueError(f"expected a latent (B, {self.Cvae}, {side}, {side}), got {tuple(f_BChw.shape)}")

    def _nearest_code(self, z_NC: torch.Tensor) -> torch.Tensor:
        # |z|^2 + |e|^2 - 2 z.e, evaluated like the official code (one addmm): near-ties are decided by the
        # float32 rounding of exactly this expression, so a cdist would pick other codes
        e_VC = self.embedding.weight.detach()
        d_NV = torch.sum(z_NC.square(), dim=1, keepdim=True) + torch.sum(e_VC.square(), dim=1, keepdim=False)
        d_NV.addmm_(z_NC, e_VC.T, alpha=-2, beta=1)
        return torch.argmin(d_NV, dim=1)

    # ------------------------------------------------------------------ whole-image operations
    @torch.no_grad()
    def f_to_indices_and_fhats(self, f_BChw: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Tokenise a latent: 10 index maps (B, pn^2) and the cumulative f_hat after each scale."""
        self._check_latent(f_BChw)
        with fp32_region(f_BChw.device.type):
            f_rest = f_BChw.detach().float().clone()
            B, C, H, W = f_rest.shape
            f_hat = torch.zeros_like(f_rest)
            idx_list, fhat_list = [], []
            for si, pn in enumerate(self.patch_nums):
                z_NC = self._down(f_rest, pn).permute(0, 2, 3, 1).reshape(-1, C)
                idx_N = self._nearest_code(z_NC)
                idx_Bl = idx_N.view(B, pn * pn)
                h = self.scale_residual(self.embedding(idx_N.view(B, pn, pn)).permute(0, 3, 1, 2).contiguous(), si)
                f_hat.add_(h)
                f_rest.sub_(h)
                idx_list.append(idx_Bl)
                fhat_list.append(f_hat.clone())
        return idx_list, fhat_list

    def indices_to_fhat(self, idx_list: list[torch.Tensor]) -> list[torch.Tensor]:
        """Cumulative f_hat (B, Cvae, 16, 16) after each scale, recomputed from the index maps alone."""
        self._check_indices(idx_list)
        with fp32_region(idx_list[0].device.type):
            f_hat = None
            out = []
            for si, idx_Bl in enumerate(idx_list):
                h = self.scale_residual(self.embed_tokens(idx_Bl, si), si)
                f_hat = h if f_hat is None else f_hat + h
                out.append(f_hat)
        return out

    def indices_to_var_input(self, idx_list: list[torch.Tensor]) -> torch.Tensor:
        """Teacher-forcing input of VAR: for scales 1..SN-1, f_hat of the coarser scales area-downsampled to the
        scale's size, as tokens; (B, L - pn_0^2, Cvae)."""
        self._check_indices(idx_list, allow_missing_last=True)
        with fp32_region(idx_list[0].device.type):
            f_hat = None
            next_tokens = []
            for si in range(self.num_scales - 1):
                h = self.scale_residual(self.embed_tokens(idx_list[si], si), si)
                f_hat = h if f_hat is None else f_hat + h
                next_tokens.append(self.next_scale_tokens(f_hat, si))
        return torch.cat(next_tokens, dim=1)

    def _check_indices(self, idx_list, allow_missing_last: bool = False) -> None:
        n = len(idx_list)
        if not (n == self.num_scales or (allow_missing_last and n == self.num_scales - 1)):
            raise ValueError(f"expected {self.num_scales} index maps (one per scale {self.patch_nums}), got {n}")
        for si, idx in enumerate(idx_list):
            if idx.ndim != 2 or idx.shape[1] != self.patch_nums[si] ** 2:
                raise ValueError(f"index map of scale {si} must be (B, {self.patch_nums[si] ** 2}), "
                                 f"got {tuple(idx.shape)}")

    # ------------------------------------------------------------------ training forward
    def forward(self, f_BChw: torch.Tensor, return_usages: bool = False):
        """Training forward: (f_hat straight-through, usages or None, vq_loss).

        vq_loss = mean over scales of `beta * mse(sg(f_hat_si), f) + mse(f_hat_si, sg(f))`; the search runs on a
        detached residual; f_hat_out = sg(f_hat) + f - sg(f) passes downstream gradients to f unchanged."""
        self._check_latent(f_BChw)
        with fp32_region(f_BChw.device.type):
            f = f_BChw.float()
            B, C, H, W = f.shape
            f_no_grad = f.detach()
            f_rest = f_no_grad.clone()
            f_hat = torch.zeros_like(f_rest)
            distributed = self.training and tdist.is_available() and tdist.is_initialized()
            vq_loss = f.new_zeros(())
            for si, pn in enumerate(self.patch_nums):
                with torch.no_grad():
                    idx_N = self._nearest_code(self._down(f_rest, pn).permute(0, 2, 3, 1).reshape(-1, C))
                if distributed:
                    self._update_hit_ema(si, idx_N)
                emb = self.embedding(idx_N.view(B, pn, pn)).permute(0, 3, 1, 2).contiguous()
                h = self.scale_residual(emb, si)
                f_hat = f_hat + h
                f_rest = f_rest - h.detach()
                vq_loss = vq_loss + F.mse_loss(f_hat.detach(), f).mul_(self.beta) + F.mse_loss(f_hat, f_no_grad)
            vq_loss = vq_loss * (1.0 / self.num_scales)
            f_hat_st = (f_hat.detach() - f_no_grad).add_(f)
        usages = None
        if return_usages:
            world = tdist.get_world_size() if (tdist.is_available() and tdist.is_initialized()) else 1
            margin = world * (B * H * W) / self.vocab_size * 0.08
            usages = [(self.ema_vocab_hit_SV[si] >= margin).float().mean().item() * 100
                      for si in range(self.num_scales)]
        return f_hat_st, usages, vq_loss

    @torch.no_grad()
    def _update_hit_ema(self, si: int, idx_N: torch.Tensor) -> None:
        hits_V = idx_N.bincount(minlength=self.vocab_size).float()
        tdist.all_reduce(hits_V)
        if self.record_hit == 0:
            self.ema_vocab_hit_SV[si].copy_(hits_V)
        elif self.record_hit < 100:
            self.ema_vocab_hit_SV[si].mul_(0.9).add_(hits_V.mul(0.1))
        else:
            self.ema_vocab_hit_SV[si].mul_(0.99).add_(hits_V.mul(0.01))
        self.record_hit += 1
