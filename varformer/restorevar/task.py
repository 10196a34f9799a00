"""RestoreVAR's training stages on the shared trainer (same checkpoints, resume, DDP, logging as VarFormer).

Stage 1 (official train.py / trainer.py): every transformer parameter trains (pretrained blocks, embeddings, head and
the new conditioning modules), initialised from ``var_d16.pth`` (``stage1_init_from_var``); the VQVAE is frozen; the
loss is the cross-entropy of teacher-forced logits on the tokenizer's GT tokens. The stage-1 model has no refiner.

Stage 2 (official train_refiner.py / trainer_refiner.py): only the refiner trains, on the L1 distance between the
refined latent of a full greedy rollout of the frozen transformer and ``quant_conv(encoder(gt))``. Differences from
the release, on purpose (docs/restorevar.md):
- the step runs through the trainer's DDP wrapper, so the refiner's gradients are averaged over the processes; the
  release calls the un-wrapped module, so each GPU trained its own copy (PyTorch's reducer ignores gradients of a
  forward that did not go through the wrapper) and rank 0's copy was saved;
- the rollout samples as inference does (drop path off in the frozen blocks); ``model.rollout_drop_path=true``
  restores the release's training-mode sampling;
- validation samples autoregressively (the release's stage-1 validation decodes teacher-forced argmax tokens, an
  optimistic figure), and stage 2 starts from a stage-1 file without inheriting stage 1's optimiser state.

Decoder fine-tuning (``varformer train decoder``): NOT the authors' code -- none was released, only its weights
(``vae_restorevar.ckpt``). The evident procedure from the paper's method figure: the VQVAE decoder (and
``post_quant_conv``) trained to reconstruct clean images from their continuous latents ``quant_conv(encoder(gt))``,
encoder frozen; L1 plus an optional VGG19 term (the authors' "combination of losses" is not known).

Optimiser (both stages, official): AdamW (0.9, 0.95), weight decay 0.05 on every parameter with 2+ dimensions or a
0-dim gain, none on vectors, biases, scales and embeddings of levels/positions; VAR's ``lin0`` schedule.
"""
from __future__ import annotations

import os
from functools import partial
from typing import Dict, List, Optional

import torch
import torch.nn.functional as F
from torch import nn

from varformer.backbone.hub import (VAE_FILENAME, load_vae, locate_backbone_file, read_state_dict,
                                    resolve_weight_file, var_filename)
from varformer.backbone.vgg19 import VGGPerceptualLoss, find_vgg19_weights
from varformer.backbone.vqvae import VQVAE
from varformer.checkpoints import ema_weights, is_training_checkpoint
from varformer.data.resize import resize_lanczos_pil
from varformer.data.train_sets import build_training_dataset
from varformer.errors import CheckpointMismatchError, ConfigError, WeightsNotFoundError
from varformer.files import read_torch_file, save_torch_atomic
from varformer.methods.api import InputsFound, StepOutput, TrainTask
from varformer.methods.validation import restoration_metrics, validation_pairs
from varformer.restorevar.convert import stage1_init_from_var
from varformer.restorevar.files import read_restorevar, save_restorevar
from varformer.restorevar.model import RestoreVAR
from varformer.restorevar.refiner import LatentRefiner
from varformer.restorevar.settings import RestoreVARSettings
from varformer.restorevar.weights import DECODER_VAE_FILE, find_weight_file
from varformer.runtime import fp32_region

DECODER_STAGE = 3
STAGE_NAMES = {1: "stage 1 (transformer)", 2: "stage 2 (refiner)", DECODER_STAGE: "decoder fine-tuning"}
# official VAR train.py: parameters whose name holds one of these get no weight decay
NO_WEIGHT_DECAY_KEYS = ("cls_token", "start_token", "task_token", "cfg_uncond", "pos_embed", "pos_1LC", "pos_start",
                        "start_pos", "lvl_embed", "gamma", "beta", "ada_gss", "moe_bias", "scale_mul")


def official_param_groups(model: nn.Module, weight_decay: float) -> List[Dict[str, object]]:
    """AdamW groups of the official ``filter_params``: decay on the rest, none on 1-D tensors, biases and the
    no-decay keys. The 0-dim gains fall in the decayed group, as in the release."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim == 1 or name.endswith("bias") or any(k in name for k in NO_WEIGHT_DECAY_KEYS):
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"name": "decay", "params": decay, "weight_decay": weight_decay},
            {"name": "no_decay", "params": no_decay, "weight_decay": 0.0}]


# ---------------------------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------------------------
def _state_of(path: str) -> Dict[str, torch.Tensor]:
    """Our tensors from a training checkpoint of a RestoreVAR run (its EMA over the live weights) or from a
    RestoreVAR model file."""
    if not os.path.isfile(path):
        raise WeightsNotFoundError(f"{path} does not exist (a RestoreVAR run's ckpt_*.pt or final_ema.pt)")
    obj = read_torch_file(path) if not path.endswith(".safetensors") else None
    if is_training_checkpoint(obj):
        return ema_weights(obj)
    return read_restorevar(path)[1]


def _load_parts(model: nn.Module, sd: Dict[str, torch.Tensor], parts, source: str, required=("var",)) -> int:
    own = model.state_dict()
    take = {k: v for k, v in sd.items() if k.split(".")[0] in parts and k in own}
    for k, v in take.items():
        if own[k].shape != v.shape:
            raise CheckpointMismatchError(f"{source}: tensor {k} has shape {tuple(v.shape)}, this model expects "
                                          f"{tuple(own[k].shape)} (another depth or width?)")
    for part in required:
        absent = [k for k in own if k.startswith(part + ".") and k not in take]
        if absent:
            raise CheckpointMismatchError(f"{source} lacks {len(absent)} {part}.* tensors of this model (e.g. "
                                          f"{absent[0]}): not a RestoreVAR checkpoint of this size")
    model.load_state_dict(take, strict=False)
    return len(take)


def _load_image_vae(model: RestoreVAR, rv, stage: int, announce) -> None:
    s = model.settings()
    if stage == 1 or not rv.decoder_vae_path:
        vae = load_vae(rv.vae_path, ch=s.vae_ch, patch_nums=tuple(s.patch_nums), local_files_only=rv.local_files_only)
        model.vae.load_state_dict(vae.state_dict(), strict=True)
        announce(f"model: VQVAE from {rv.vae_path or 'vae_ch160v4096z32.pth'}"
                 + ("" if stage == 1 else f" (no model.decoder_vae_path: the official stage 2 uses "
                                          f"{DECODER_VAE_FILE}; only its encoder matters for the refiner loss)"))
        return
    sd = read_state_dict(find_weight_file(DECODER_VAE_FILE, rv.decoder_vae_path))
    model.vae.load_state_dict(sd, strict=True)
    announce(f"model: VQVAE from {rv.decoder_vae_path}")


def build_restorevar_model(cfg, stage: int, announce=print) -> RestoreVAR:
    """The stage's model with its weights: stage 1 from ``var_d{depth}.pth`` + the tokenizer (or
    ``model.weights``), stage 2 from a stage-1 file (``model.stage1_weights``) + the fine-tuned VQVAE."""
    rv = cfg.model
    settings = RestoreVARSettings.from_config(rv)
    if stage == 1:
        settings = settings.replace(refiner_depth=0)       # the official stage-1 VAR has no refiner
    elif not settings.refiner_depth:
        raise ConfigError("stage 2 trains the refiner: model.refiner_depth must be > 0")
    source = rv.weights if stage == 1 else (rv.stage1_weights or rv.weights)
    if stage == 2 and not source:
        raise ConfigError("stage 2 needs the trained transformer: set model.stage1_weights to a stage-1 run's "
                          "final_ema.pt (or ckpt_*.pt), or model.weights to a RestoreVAR checkpoint")
    dpr = 0.1 * settings.depth / 24 if rv.drop_path_rate is None else float(rv.drop_path_rate)
    model = RestoreVAR(**settings.constructor_kwargs(), drop_path_rate=dpr)
    model.var.init_weights()
    if model.refiner is not None:
        model.refiner.init_weights(LatentRefiner.var_init_std(settings.embed_dim))
    if rv.random_init_backbone:
        announce("model: RANDOM-INIT VQVAE and VAR (model.random_init_backbone=true): for tests and the demo "
                 "only, no ImageNet knowledge")
    else:
        _load_image_vae(model, rv, stage, announce)
    if source:
        parts = ("var", "refiner") + (("vae",) if rv.random_init_backbone else ())
        n = _load_parts(model, _state_of(source), parts, source)
        announce(f"model: {n} tensors from {source}")
    elif stage == 1 and not rv.random_init_backbone:
        file = resolve_weight_file(var_filename(settings.depth), path=rv.var_path,
                                   local_files_only=rv.local_files_only)
        sd, report = stage1_init_from_var(read_state_dict(file), settings)
        model.var.load_state_dict({k[len("var."):]: v for k, v in sd.items()}, strict=True)
        announce(f"model: {report.summary()} ({file})")
    return model


def freeze_for_stage(model: RestoreVAR, stage: int) -> None:
    model.requires_grad_(False)
    (model.var if stage == 1 else model.refiner).requires_grad_(True)


# ---------------------------------------------------------------------------------------------------------------
# Tasks
# ---------------------------------------------------------------------------------------------------------------
class RestoreVARTask(TrainTask):
    """One step of stage 1 (teacher-forced cross-entropy) or stage 2 (refiner L1); validation samples."""

    def __init__(self, model: RestoreVAR, stage: int, weight_decay: float = 0.05,
                 val_pairs: Optional[List[Dict[str, torch.Tensor]]] = None, val_batch: int = 1,
                 store_frozen_params: bool = False, rollout_drop_path: bool = False):
        super().__init__()
        if stage not in (1, 2):
            raise ConfigError(f"RestoreVAR stage must be 1 or 2 here, got {stage}")
        self.model, self.stage, self.weight_decay = model, stage, weight_decay
        self.val_pairs, self.val_batch = val_pairs or [], val_batch
        self.store_frozen_params = store_frozen_params
        self.rollout_drop_path = rollout_drop_path
        self._val_visuals: Dict[str, torch.Tensor] = {}

    def parameter_groups(self) -> List[Dict[str, object]]:
        return official_param_groups(self.model, self.weight_decay)

    def forward(self, batch) -> StepOutput:
        lq, gt = batch["lq"], batch["gt"]
        if self.stage == 1:
            out = self.model.training_outputs(lq, gt)
            acc = (out.logits.detach().argmax(-1) == torch.cat(out.gt_tokens, dim=1)).float().mean()
            return StepOutput(loss=out.ce, terms={"total": out.ce.detach(), "token_ce": out.ce.detach(),
                                                  "metric_token_acc": acc})
        loss = self.model.refiner_loss(lq, gt, rollout_drop_path=self.rollout_drop_path)
        return StepOutput(loss=loss, terms={"total": loss.detach(), "refiner_l1": loss.detach()})

    def validate(self, model: nn.Module, step: int) -> Dict[str, float]:
        """Autoregressive restoration of the held-out pairs (as inference runs): PSNR / SSIM of output and input;
        stage 1 also the teacher-forced cross-entropy and token accuracy, stage 2 the refiner loss."""
        def extra(lq, out, gt) -> Dict[str, float]:
            if self.stage == 2:
                return {"refiner_l1": float(model.refiner_loss(lq, gt))}
            to = model.training_outputs(lq, gt)
            return {"token_ce": float(to.ce),
                    "token_acc": float((to.logits.argmax(-1) == torch.cat(to.gt_tokens, 1)).float().mean())}

        metrics, self._val_visuals = restoration_metrics(model, self.val_pairs, self.val_batch, extra=extra)
        return metrics

    def validation_visuals(self) -> Dict[str, torch.Tensor]:
        return self._val_visuals

    def export(self, model: nn.Module, path: str) -> Optional[str]:
        return save_restorevar(path + ".pt", model)


class DecoderFinetuneTask(TrainTask):
    """NOT the authors' code (none was released): the VQVAE decoder and ``post_quant_conv`` learn to decode the
    clean continuous latent ``quant_conv(encoder(gt))``; loss L1 (+ ``perceptual`` x VGG19 on relu5_4). Exports a
    plain VQVAE state dict in the layout of ``vae_restorevar.ckpt``."""

    def __init__(self, vae: VQVAE, perceptual: Optional[nn.Module] = None, perceptual_weight: float = 0.0):
        super().__init__()
        self.model = vae
        vae.requires_grad_(False)
        vae.decoder.requires_grad_(True)
        vae.post_quant_conv.requires_grad_(True)
        self.perceptual, self.perceptual_weight = perceptual, perceptual_weight
        self.store_frozen_params = True       # the frozen encoder belongs in the exported file

    def train(self, mode: bool = True):
        super().train(mode)
        self.model.quantize.eval()
        return self

    def forward(self, batch) -> StepOutput:
        gt_pm1 = batch["gt"] * 2 - 1
        vae = self.model
        with torch.no_grad(), fp32_region(gt_pm1.device):
            f = vae.quant_conv(vae.encoder(gt_pm1.float()))
        rec = vae.decoder(vae.post_quant_conv(f)).float()
        l1 = F.l1_loss(rec, gt_pm1)
        terms = {"pixel_l1": l1.detach()}
        loss = l1
        if self.perceptual is not None and self.perceptual_weight > 0:
            p = self.perceptual(rec, gt_pm1)
            terms["perceptual"] = p.detach()
            loss = loss + self.perceptual_weight * p
        terms["total"] = loss.detach()
        visuals = {"gt": batch["gt"], "decoded": rec.detach().clamp(-1, 1).add(1).mul(0.5)}
        return StepOutput(loss=loss, terms=terms, visuals=visuals)

    def export(self, model: nn.Module, path: str) -> Optional[str]:
        out = path + ".ckpt"
        save_torch_atomic({k: v.detach().cpu() for k, v in model.state_dict().items()}, out)
        return out


# ---------------------------------------------------------------------------------------------------------------
# Data and assembly
# ---------------------------------------------------------------------------------------------------------------
def build_val_pairs(cfg, size: int) -> List[Dict[str, torch.Tensor]]:
    """Held-out pairs resized to the model's size with Lanczos (the restorevar protocol)."""
    return validation_pairs(cfg, partial(resize_lanczos_pil, size=size))


def build_restorevar_task(cfg, stage: int, announce=print) -> TrainTask:
    rv = cfg.model
    if stage == DECODER_STAGE:
        s = RestoreVARSettings.from_config(rv)
        vae = VQVAE(ch=s.vae_ch, patch_nums=tuple(s.patch_nums))
        if not rv.random_init_backbone:
            path = rv.decoder_vae_path or rv.vae_path
            vae.load_state_dict(load_vae(path, ch=s.vae_ch, patch_nums=tuple(s.patch_nums),
                                         local_files_only=rv.local_files_only).state_dict())
        announce("decoder fine-tuning: NOT the authors' code (not released); decoder + post_quant_conv on clean "
                 "continuous latents, L1" + (f" + {rv.decoder_perceptual:g} x VGG19" if rv.decoder_perceptual else ""))
        vgg = (VGGPerceptualLoss(find_vgg19_weights(cfg.train.loss.vgg_path), "relu5_4", "l1")
               if rv.decoder_perceptual > 0 else None)
        return DecoderFinetuneTask(vae, vgg, rv.decoder_perceptual)
    model = build_restorevar_model(cfg, stage, announce)
    freeze_for_stage(model, stage)
    announce(f"RestoreVAR {STAGE_NAMES[stage]}: " + ("cross-entropy of teacher-forced logits" if stage == 1 else
             "L1 of the refined latent to quant_conv(encoder(gt))" + (" (rollout with drop path, as released)"
                                                                      if rv.rollout_drop_path else "")))
    return RestoreVARTask(model, stage, cfg.train.weight_decay, build_val_pairs(cfg, model.image_size),
                          val_batch=cfg.eval.batch_size, store_frozen_params=bool(rv.random_init_backbone),
                          rollout_drop_path=bool(rv.rollout_drop_path))


def training_data(cfg):
    # every RestoreVAR stage trains on degraded/clean pairs of the task mixture
    return build_training_dataset(cfg.data, 2, cfg.train.seed, task_order=cfg.demo.task_order)


def _file_line(what: str, path: str) -> str:
    if not os.path.isfile(path):
        raise WeightsNotFoundError(f"{what}: {path} does not exist")
    return f"{what}: {path}"


def check_inputs(cfg, stage: int) -> InputsFound:
    """The stage's settings, crop size and weight files, located (not loaded) where the run will look."""
    rv = cfg.model
    settings = RestoreVARSettings.from_config(rv)
    found = InputsFound()
    if stage != DECODER_STAGE and cfg.data.crop_size != settings.image_size:
        raise ConfigError(f"data.crop_size={cfg.data.crop_size}, but this RestoreVAR works on {settings.image_size}x"
                          f"{settings.image_size} inputs (its last scale {settings.patch_nums[-1]} x 16); set "
                          f"data.crop_size={settings.image_size} (and data.resize_short above it)")
    if stage == 2 and not settings.refiner_depth:
        raise ConfigError("stage 2 trains the refiner: model.refiner_depth must be > 0")
    if stage == 2 and not (rv.stage1_weights or rv.weights):
        raise ConfigError("stage 2 needs the trained transformer: set model.stage1_weights to a stage-1 run's "
                          "final_ema.pt (or ckpt_*.pt), or model.weights to a RestoreVAR checkpoint")
    for what, path in (("model.weights", rv.weights), ("model.stage1_weights", rv.stage1_weights)):
        if path and (stage != 1 or what == "model.weights"):
            found.weights.append(_file_line(what, path))
    if rv.random_init_backbone:
        found.weights.append("VQVAE/VAR: RANDOM-INIT (model.random_init_backbone=true: tests and the demo)")
    elif stage == DECODER_STAGE or (stage == 2 and rv.decoder_vae_path):
        path = rv.decoder_vae_path if stage == 2 else (rv.decoder_vae_path or rv.vae_path)
        if path:
            found.weights.append(_file_line("VQVAE", path))
        else:
            line, note = locate_backbone_file("VQVAE", VAE_FILENAME, None, rv.local_files_only)
            found.weights.append(line)
            found.notes += [note] if note else []
    else:
        files = [("VQVAE", VAE_FILENAME, rv.vae_path)]
        if stage == 1 and not rv.weights:
            files.append((f"VAR d{settings.depth}", var_filename(settings.depth), rv.var_path))
        for what, filename, path in files:
            line, note = locate_backbone_file(what, filename, path, rv.local_files_only)
            found.weights.append(line)
            found.notes += [note] if note else []
    if stage == DECODER_STAGE and rv.decoder_perceptual > 0:
        found.weights.append(f"VGG19 (perceptual loss): {find_vgg19_weights(cfg.train.loss.vgg_path)}")
    return found
