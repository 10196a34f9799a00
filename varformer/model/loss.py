"""VarFormer training losses (official model ``VarFormerIdxModel4_2_losszd``; docs/official-differences.md).

Official recipe (the default, ``train.loss.formulation=official``), one code path for both stages:

=========================  =====================================================  =========  =========
term                       formula                                                stage 1    stage 2
=========================  =====================================================  =========  =========
``pixel_l1``               mean |o - gt| (images in [-1, 1])                       metric     1.0
``psnr``                   (10 / ln 10) * mean_b log(mean_chw (o - gt)^2 + 1e-8)   -          0.5
``perceptual``             mean |VGG19_relu5_4(o') - VGG19_relu5_4(gt')|            -          1.0
``feature_l2``             mean (lq_feat - stopgrad(F_gt))^2                       0.5        0.5
``token_ce``               CE(greedy-rollout logits (B,680,V), GT tokens)          0.1        0.1
=========================  =====================================================  =========  =========

(stage 1's image is decoded from discrete tokens, so its pixel L1 carries no gradient: it is logged, not trained.)

Paper formulation (``formulation=paper``): stage 1 = CE + squared L2 feature term; stage 2 = -PSNR + perceptual
term (use ``perceptual_criterion=l2`` for the paper's squared L2) with the VAR frozen: the stage-1 terms and the
pixel L1 are off, the weights in ``train.loss`` scale the terms that remain.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from varformer.backbone.vgg19 import VGGPerceptualLoss, find_vgg19_weights
from varformer.errors import ConfigError

_PSNR_SCALE = 10.0 / math.log(10.0)


# ---------------------------------------------------------------------------------------------------------------
# Individual terms (unweighted)
# ---------------------------------------------------------------------------------------------------------------
def pixel_l1(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (pred.float() - target.float()).abs().mean()


def psnr_loss(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """``(10/ln10) * mean_b log(MSE_b + eps)`` = mean over images of 10·log10(MSE): the official PSNR loss (NAFNet
    style). It equals -PSNR up to the constant 10·log10(peak²), so the paper's "-PSNR" has the same gradient."""
    mse_b = (pred.float() - target.float()).pow(2).flatten(1).mean(1)
    return _PSNR_SCALE * torch.log(mse_b + eps).mean()


def negative_psnr(pred: torch.Tensor, target: torch.Tensor, data_range: float = 2.0) -> torch.Tensor:
    """The paper's ``-PSNR`` in dB, mean over images (images in [-1, 1] -> peak-to-peak range 2)."""
    mse_b = (pred.float() - target.float()).pow(2).flatten(1).mean(1)
    return (_PSNR_SCALE * torch.log(mse_b / data_range ** 2)).mean()


def token_cross_entropy(logits_BLV: torch.Tensor, tokens: Sequence[torch.Tensor] | torch.Tensor) -> torch.Tensor:
    """Mean CE over B x L positions; ``tokens`` is the 10 GT index maps (B, pn²) or their concatenation (B, L)."""
    target_BL = torch.cat(list(tokens), dim=1) if not torch.is_tensor(tokens) else tokens
    if target_BL.shape != logits_BLV.shape[:2]:
        raise ValueError(f"token CE: logits {tuple(logits_BLV.shape)} vs targets {tuple(target_BL.shape)}")
    # fp32 log-softmax: bf16 logits over 4096 classes lose ~2 digits in the normaliser
    return F.cross_entropy(logits_BLV.float().flatten(0, 1), target_BL.flatten().long())


def feature_mse(lq_feat: torch.Tensor, clean_feat: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(lq_feat.float(), clean_feat.detach().float())


# ---------------------------------------------------------------------------------------------------------------
# The stage losses
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class LossTerms:
    total: torch.Tensor
    terms: Dict[str, torch.Tensor]  # weighted trained terms (``w_*``), plain values and metrics, all detached-safe


def stage_terms(formulation: str, stage: int) -> List[str]:
    """The terms that carry gradient for a stage and formulation (the table above / the paper's formulas)."""
    if formulation == "official":
        return ["token_ce", "feature_l2"] if stage == 1 else ["pixel_l1", "psnr", "perceptual", "token_ce",
                                                              "feature_l2"]
    if formulation == "paper":
        return ["token_ce", "feature_l2"] if stage == 1 else ["psnr", "perceptual"]
    raise ConfigError(f"train.loss.formulation must be 'official' or 'paper', got '{formulation}'")


class VarFormerLoss(nn.Module):
    """Weighted sum of the stage's terms. ``forward(out, gt_pm1, gt_tokens, gt_feat)`` with ``out`` a model's
    ``training_outputs`` (``restored`` in [-1,1], ``lq_feat``, ``logits``), ``gt_pm1`` the clean image in [-1,1],
    ``gt_tokens`` the 10 GT index maps, ``gt_feat`` the clean cumulative reconstruction (B,32,16,16)."""

    def __init__(self, loss_cfg, stage: int, vgg: Optional[VGGPerceptualLoss] = None, with_prior: bool = True):
        super().__init__()
        if stage not in (1, 2):
            raise ConfigError(f"stage must be 1 or 2, got {stage}")
        self.stage, self.formulation = stage, loss_cfg.formulation
        active = stage_terms(self.formulation, stage)
        if not with_prior:  # the ablation without the VAR prior: no rollout logits, no adapted latent
            active = [k for k in active if k not in ("token_ce", "feature_l2")]
        weights = {"pixel_l1": loss_cfg.pixel_l1, "psnr": loss_cfg.psnr, "perceptual": loss_cfg.perceptual,
                   "token_ce": loss_cfg.token_ce, "feature_l2": loss_cfg.feature_l2}
        for k, w in weights.items():
            if w < 0:
                raise ConfigError(f"train.loss.{k} must be >= 0, got {w}")
        self.weights = {k: float(weights[k]) for k in active if weights[k] > 0}
        if not self.weights:
            raise ConfigError(f"stage {stage} ({self.formulation}): every loss weight is 0, nothing to train")
        if "perceptual" in self.weights and vgg is None:
            raise ConfigError("the perceptual term needs a VGGPerceptualLoss (or train.loss.perceptual=0)")
        self.vgg = vgg if "perceptual" in self.weights else None

    @classmethod
    def from_config(cls, loss_cfg, stage: int, announce=print, with_prior: bool = True) -> "VarFormerLoss":
        vgg = None
        if stage == 2 and "perceptual" in stage_terms(loss_cfg.formulation, 2):
            if loss_cfg.perceptual > 0:
                vgg = VGGPerceptualLoss(find_vgg19_weights(loss_cfg.vgg_path), loss_cfg.perceptual_layer,
                                        loss_cfg.perceptual_criterion)
            else:
                announce("!" * 100 + "\n!! train.loss.perceptual=0: training stage 2 WITHOUT the VGG19 perceptual "
                         "term (not the official recipe)\n" + "!" * 100)
        if not with_prior:
            announce("model.prior=none: no VAR rollout, so the token CE and feature terms are off")
        return cls(loss_cfg, stage, vgg, with_prior)

    def _image_terms(self, restored: torch.Tensor, gt_pm1: torch.Tensor) -> Dict[str, torch.Tensor]:
        w, raw = self.weights, {}
        if "pixel_l1" in w:
            raw["pixel_l1"] = pixel_l1(restored, gt_pm1)
        if "psnr" in w:
            raw["psnr"] = psnr_loss(restored, gt_pm1) if self.formulation == "official" \
                else negative_psnr(restored, gt_pm1)
        if "perceptual" in w:
            raw["perceptual"] = self.vgg(restored, gt_pm1)
        return raw

    def image_loss(self, restored_pm1: torch.Tensor, gt_pm1: torch.Tensor) -> Optional[torch.Tensor]:
        """The weighted image terms of this stage's loss (L1, PSNR, perceptual) on restored images, e.g. held-out
        ones at validation, where there are no token targets; None when the stage has no image term (stage 1)."""
        raw = self._image_terms(restored_pm1, gt_pm1)
        return sum(self.weights[k] * v for k, v in raw.items()) if raw else None

    def forward(self, out, gt_pm1: torch.Tensor, gt_tokens: Sequence[torch.Tensor],
                gt_feat: torch.Tensor) -> LossTerms:
        w = self.weights
        restored = out.restored
        raw: Dict[str, torch.Tensor] = self._image_terms(restored, gt_pm1)
        if "token_ce" in w:
            raw["token_ce"] = token_cross_entropy(out.logits, gt_tokens)
        if "feature_l2" in w:
            raw["feature_l2"] = feature_mse(out.lq_feat, gt_feat)
        total = sum(w[k] * v for k, v in raw.items())
        terms = {"total": total.detach(), **{k: v.detach() for k, v in raw.items()}}
        with torch.no_grad():  # monitored, not trained: stage 1's image and token accuracy
            if "pixel_l1" not in raw:
                terms["metric_pixel_l1"] = pixel_l1(restored, gt_pm1)
            if out.logits is not None:
                target = torch.cat(list(gt_tokens), dim=1)
                terms["metric_token_acc"] = (out.logits.argmax(-1) == target).float().mean()
        return LossTerms(total=total, terms=terms)
