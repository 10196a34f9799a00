"""One step of VARestorer's one-step distillation on the shared trainer (``varformer train distill``; a
reconstruction: the release has no training code, docs/varestorer.md "Training (reconstructed)").

Per batch (LQ, GT in [0, 1], captions)::

    text      = T5 rows of each caption; with probability text_drop_rate an image's text -> the null text
    HQ        = residual pyramid of vae.encode(GT): teacher-forcing input x_tf (B, L - 1, 32) and its bits
    LQ        = residual pyramid of vae.encode(SwinIR(LQ) or LQ), long input x_long (B, L - 1 + G^2, 32)
    logits_T  = teacher(text, x_tf), block-causal, no grad                       (B, L, 64)
    logits_S  = student(text, x_long), full attention (block-causal: ablation)   (B, L, 64)
    bit loss  = KL(p_T || p_S) per bit | CE(logits_S, HQ bits) | none
    image     = vae.decode(codes of straight-through Gumbel bits of logits_S)    gradients reach logits_S
    loss      = w_bit * bit loss + w_mse * MSE(image, GT) + w_lpips * LPIPS(image, GT)      images in [-1, 1]

Random draws (text drop, Gumbel noise) come from the global CPU generator, which the trainer saves and restores:
a resumed run repeats the uninterrupted one exactly. Only the LoRA tensors train; the checkpoints hold them (and
their EMA); everything frozen comes back from its files (or the seed, for random-init runs).
"""
from __future__ import annotations

import os
from typing import Dict, List, Optional

import torch
import torch.nn.functional as F
from torch import nn

from varformer.backbone.infinity.bsq_quantizer import residual_pyramid, summed_codes
from varformer.backbone.infinity.text_pool import PaddedText
from varformer.backbone.infinity.transformer import Infinity
from varformer.checkpoints import save_model_file
from varformer.errors import ConfigError
from varformer.files import save_torch_atomic
from varformer.methods.api import StepOutput, TrainTask
from varformer.methods.validation import restoration_metrics
from varformer.runtime import autocast, fp32_region
from varformer.varestorer.convert import to_official_varestorer
from varformer.varestorer.distill_config import VARestorerDistillConfig
from varformer.varestorer.distill_losses import (attention_mask, bit_accuracy, bitwise_cross_entropy, bitwise_kl,
                                                 flat_bits, straight_through_bits, transformer_logits)
from varformer.varestorer.distill_text import PromptFeatures
from varformer.varestorer.files import METHOD
from varformer.varestorer.model import VARestorer
from varformer.varestorer.weights import SWINIR_FILE, VAE_FILE, VARESTORER_FILE


class ValidationRestorer(nn.Module):
    """``restoration_metrics`` calls ``model(lq)``: the student with one prompt for every image, argmax bits (a
    deterministic measure), under the training's autocast when its frozen blocks are stored in bf16."""

    def __init__(self, model: VARestorer, prompt_rows: torch.Tensor, precision: str):
        super().__init__()
        self.model, self.prompt_rows, self.precision = model, prompt_rows, precision

    def forward(self, lq01: torch.Tensor) -> torch.Tensor:
        with autocast(lq01.device, self.precision):
            return self.model(lq01, [self.prompt_rows] * lq01.shape[0], argmax_bits=True).float()


class DistillTask(TrainTask):
    def __init__(self, student: VARestorer, teacher: Optional[Infinity], loss_cfg: VARestorerDistillConfig,
                 text: PromptFeatures, lpips: Optional[nn.Module] = None, weight_decay: float = 0.0,
                 val_pairs: Optional[List[Dict[str, torch.Tensor]]] = None, val_batch: int = 1,
                 store_frozen_params: bool = False, export_frozen: bool = False):
        super().__init__()
        self.model = student
        self.teacher = teacher                     # frozen; its parameters may be the student's own objects
        self.lpips = lpips                         # frozen
        self.cfg, self.text, self.weight_decay = loss_cfg, text, weight_decay
        self.patch_nums = tuple(student.patch_nums)
        self.val_pairs, self.val_batch = val_pairs or [], val_batch
        self.store_frozen_params = store_frozen_params
        self.export_frozen = export_frozen         # also write the VAE / SwinIR (not the released files)
        self._val_visuals: Dict[str, torch.Tensor] = {}
        if loss_cfg.needs_teacher and teacher is None:
            raise ConfigError("train.loss.bit_loss=kl needs the teacher")
        if loss_cfg.needs_decode and loss_cfg.lpips_weight > 0 and lpips is None:
            raise ConfigError("train.loss.lpips_weight > 0 needs the LPIPS network")
        if loss_cfg.preclean_lq and student.swinir is None:
            raise ConfigError("train.loss.preclean_lq needs a student with SwinIR (model.swinir=true)")

    # -- modes and groups --------------------------------------------------------------------------------------
    def train(self, mode: bool = True):
        super().train(mode)
        for frozen in (self.teacher, self.lpips, self.model.vae, self.model.swinir):
            if frozen is not None:
                frozen.eval()                      # no drop path in the teacher
        return self

    def parameter_groups(self) -> List[Dict[str, object]]:
        lora = [p for p in self.model.parameters() if p.requires_grad]
        return [{"name": "lora", "params": lora, "weight_decay": self.weight_decay}]

    def checkpointed_modules(self) -> List[nn.Module]:
        return self.model.transformer.iter_blocks()

    # -- one step ------------------------------------------------------------------------------------------------
    def _texts(self, captions: List[str], device: torch.device):
        """(student text, teacher text, the per-image drop flags)."""
        text = PaddedText.from_list(self.text(list(captions)), device=device)
        drop = torch.rand(len(captions)) < self.cfg.text_drop_rate      # global CPU generator: resumable
        t = self.model.transformer
        student = t.drop_text(text, drop) if bool(drop.any()) else text
        if self.cfg.teacher_text == "null":
            teacher = t.drop_text(text, torch.ones(len(captions), dtype=torch.bool))
        else:
            teacher = student if self.cfg.text_drop_teacher else text
        return student, teacher, drop

    @torch.no_grad()
    def pyramids(self, lq01: torch.Tensor, gt01: torch.Tensor):
        """(HQ teacher-forcing input, HQ bits (B, L, d), the student's long LQ input), float32, no gradients."""
        s = self.model
        hq_latent = s.encode(gt01)
        lq_in = s.clean(lq01) if self.cfg.preclean_lq else lq01.float()
        lq_latent = s.encode(lq_in)
        with fp32_region(lq01.device):
            x_tf, hq_bits = residual_pyramid(hq_latent, self.patch_nums, long_input=False)
            x_long, _ = residual_pyramid(lq_latent, self.patch_nums, long_input=True)
        return x_tf, flat_bits(hq_bits), x_long

    @torch.no_grad()
    def teacher_logits(self, text: PaddedText, x_tf: torch.Tensor) -> torch.Tensor:
        mask = attention_mask(self.patch_nums, False, True, x_tf.device)
        logits = transformer_logits(self.teacher, text, x_tf, mask)
        if self.cfg.teacher_cfg != 1:
            null = self.teacher.drop_text(text, torch.ones(x_tf.shape[0], dtype=torch.bool))
            uncond = transformer_logits(self.teacher, null, x_tf, mask)
            logits = self.cfg.teacher_cfg * logits + (1 - self.cfg.teacher_cfg) * uncond
        return logits

    def student_logits(self, text: PaddedText, x_long: torch.Tensor) -> torch.Tensor:
        mask = attention_mask(self.patch_nums, True, not self.cfg.cross_scale_attention, x_long.device)
        return transformer_logits(self.model.transformer, text, x_long, mask)

    def decode(self, logits_S: torch.Tensor) -> torch.Tensor:
        """The straight-through image (B, 3, S, S) in [-1, 1] (clamped as the release's decode, if set)."""
        with fp32_region(logits_S.device):
            bits = straight_through_bits(logits_S, self.patch_nums, self.cfg.gumbel_tau)
            img = self.model.vae.decoder(summed_codes(bits, self.patch_nums).contiguous()).float()
            return img.clamp(-1, 1) if self.cfg.decode_clamp else img

    def forward(self, batch) -> StepOutput:
        c = self.cfg
        lq01, gt01 = batch["lq"], batch["gt"]
        text_S, text_T, drop = self._texts(batch["caption"], lq01.device)
        x_tf, hq_bits, x_long = self.pyramids(lq01, gt01)
        logits_S = self.student_logits(text_S, x_long)
        terms: Dict[str, torch.Tensor] = {"metric_bit_acc": bit_accuracy(logits_S, hq_bits),
                                          "metric_text_dropped": drop.float().mean().to(lq01.device)}
        loss = logits_S.new_zeros(())
        if c.bit_loss == "kl" and c.bit_loss_weight > 0:
            logits_T = self.teacher_logits(text_T, x_tf)
            kl = bitwise_kl(logits_T, logits_S, self.patch_nums, c.bit_loss_reduction, c.teacher_temperature)
            loss = loss + c.bit_loss_weight * kl
            terms["kl"] = kl.detach()
            terms["metric_teacher_bit_acc"] = bit_accuracy(logits_T, hq_bits)
        elif c.bit_loss == "ce" and c.bit_loss_weight > 0:
            ce = bitwise_cross_entropy(logits_S, hq_bits, self.patch_nums, c.bit_loss_reduction)
            loss = loss + c.bit_loss_weight * ce
            terms["ce"] = ce.detach()
        visuals = {"lq": lq01.detach().float(), "gt": gt01.detach().float()}
        if c.needs_decode:
            img = self.decode(logits_S)
            gt_pm1 = gt01.float() * 2 - 1
            with fp32_region(img.device):
                if c.mse_weight > 0:
                    mse = F.mse_loss(img, gt_pm1)
                    loss = loss + c.mse_weight * mse
                    terms["mse"] = mse.detach()
                if c.lpips_weight > 0:
                    lp = self.lpips(img, gt_pm1).mean()
                    loss = loss + c.lpips_weight * lp
                    terms["lpips"] = lp.detach()
            visuals["output"] = img.detach().add(1).mul(0.5).clamp(0, 1)
        terms["total"] = loss.detach()
        return StepOutput(loss=loss, terms=terms, visuals=visuals)

    # -- validation and export -----------------------------------------------------------------------------------
    def validate(self, model: nn.Module, step: int) -> Dict[str, float]:
        """PSNR / SSIM of the student (argmax bits, ``val_prompt`` for every image) on the held-out pairs."""
        if not self.val_pairs:
            return {}
        rows = self.text([self.cfg.val_prompt])[0]
        # frozen blocks stored in bf16 need bf16 autocast; frozen_dtype is "bf16" or "fp32", a precision's spelling
        restorer = ValidationRestorer(model, rows, self.cfg.frozen_dtype)
        metrics, self._val_visuals = restoration_metrics(restorer, self.val_pairs, self.val_batch)
        return metrics

    def validation_visuals(self) -> Dict[str, torch.Tensor]:
        return self._val_visuals

    def export(self, model: nn.Module, path: str) -> Optional[str]:
        """``path.safetensors``: our model file (``varformer restore`` / ``evaluate`` take it); and the folder
        ``path_official/`` in the release's layout: ``varestorer.pth`` (float32, LoRA apart: what the official
        ``load_infinity`` loads strictly, and ``VARestorer.from_official``), with random-init frozen parts also
        their ``infinity_vae_d32reg.pth`` and ``general_swinir_v1.ckpt`` (otherwise the released files are the
        frozen parts)."""
        export_official(model, path + "_official", self.export_frozen)
        # float32 (frozen blocks trained in bf16 hold bf16 values): a model file that runs under any precision
        return save_model_file(path + ".safetensors", METHOD, model.settings().to_metadata(), float32_state(model))


def float32_state(model: nn.Module) -> Dict[str, torch.Tensor]:
    return {k: v.detach().float().cpu() for k, v in model.state_dict().items()}


def export_official(model: VARestorer, folder: str, with_frozen_parts: bool = False) -> List[str]:
    """Write ``folder/varestorer.pth`` (and with ``with_frozen_parts`` the VAE and SwinIR files) as the
    ``varestorer-to-official`` converter does; returns the paths."""
    parts = to_official_varestorer(float32_state(model), model.settings())
    files = [(VARESTORER_FILE, parts["model"])]
    if with_frozen_parts:
        files.append((VAE_FILE, {"vae": parts["vae"]}))
        if parts["swinir"] is not None:
            files.append((SWINIR_FILE, {"state_dict": parts["swinir"]}))
    out = []
    for name, obj in files:
        out.append(os.path.join(folder, name))
        save_torch_atomic(obj, out[-1])
    return out
