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
- the rollout samples as inference does (drop path off in the frozen blocks); ``restorevar.rollout_drop_path=true``
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
from typing import Dict, List, Optional

import torch
import torch.nn.functional as F
from torch import nn

from varformer.backbone.hub import load_vae, read_state_dict, read_torch_file, resolve_weight_file, var_filename
from varformer.backbone.vqvae import VQVAE
from varformer.data.benchmark_data import benchmark_dataset
from varformer.data.catalog import expand_names
from varformer.data.resize import resize_lanczos_pil
from varformer.errors import CheckpointMismatchError, ConfigError, WeightsNotFoundError
from varformer.metrics import psnr, ssim
from varformer.restorevar import (DECODER_VAE_FILE, RestoreVAR, RestoreVARSettings, find_weight_file,
                                  read_restorevar, save_restorevar, stage1_init_from_var)
from varformer.restorevar.refiner import LatentRefiner
from varformer.training.losses import VGGPerceptualLoss, find_vgg19_weights
from varformer.training.trainer import StepOutput, TrainTask

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
    obj = read_torch_file(path)  # weights_only=True: a file with code is refused, never unpickled
    if isinstance(obj, dict) and "model" in obj and "ema" in obj:
        sd = dict(obj["model"])
        sd.update(obj["ema"])
        return sd
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
                 + ("" if stage == 1 else f" (no restorevar.decoder_vae_path: the official stage 2 uses "
                                          f"{DECODER_VAE_FILE}; only its encoder matters for the refiner loss)"))
        return
    sd = read_state_dict(find_weight_file(DECODER_VAE_FILE, rv.decoder_vae_path))
    model.vae.load_state_dict(sd, strict=True)
    announce(f"model: VQVAE from {rv.decoder_vae_path}")


def build_restorevar_model(cfg, stage: int, announce=print) -> RestoreVAR:
    """The stage's model with its weights: stage 1 from ``var_d{depth}.pth`` + the tokenizer (or
    ``restorevar.weights``), stage 2 from a stage-1 file (``restorevar.stage1_weights``) + the fine-tuned VQVAE."""
    rv = cfg.restorevar
    settings = RestoreVARSettings.from_config(rv)
    if stage == 1:
        settings = settings.replace(refiner_depth=0)       # the official stage-1 VAR has no refiner
    elif not settings.refiner_depth:
        raise ConfigError("stage 2 trains the refiner: restorevar.refiner_depth must be > 0")
    source = rv.weights if stage == 1 else (rv.stage1_weights or rv.weights)
    if stage == 2 and not source:
        raise ConfigError("stage 2 needs the trained transformer: set restorevar.stage1_weights to a stage-1 run's "
                          "final_ema.pt (or ckpt_*.pt), or restorevar.weights to a RestoreVAR checkpoint")
    dpr = 0.1 * settings.depth / 24 if rv.drop_path_rate is None else float(rv.drop_path_rate)
    model = RestoreVAR(**settings.constructor_kwargs(), drop_path_rate=dpr)
    model.var.init_weights()
    if model.refiner is not None:
        model.refiner.init_weights(LatentRefiner.var_init_std(settings.embed_dim))
    if rv.random_init_backbone:
        announce("model: RANDOM-INIT VQVAE and VAR (restorevar.random_init_backbone=true): for tests and the demo "
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
        if not self.val_pairs:
            return {}
        device = next(model.parameters()).device
        vals: Dict[str, List[float]] = {"psnr": [], "ssim": [], "psnr_input": []}
        extra: List[float] = []
        acc: List[float] = []
        for i in range(0, len(self.val_pairs), self.val_batch):
            chunk = self.val_pairs[i:i + self.val_batch]
            lq = torch.stack([p["lq"] for p in chunk]).to(device)
            gt = torch.stack([p["gt"] for p in chunk]).to(device)
            out = model(lq)
            vals["psnr"] += [float(v) for v in psnr(out, gt)]
            vals["ssim"] += [float(v) for v in ssim(out, gt)]
            vals["psnr_input"] += [float(v) for v in psnr(lq, gt)]
            if self.stage == 1:
                to = model.training_outputs(lq, gt)
                extra.append(float(to.ce) * len(chunk))
                acc.append(float((to.logits.argmax(-1) == torch.cat(to.gt_tokens, 1)).float().mean()) * len(chunk))
            else:
                extra.append(float(model.refiner_loss(lq, gt)) * len(chunk))
        metrics = {k: sum(v) / len(v) for k, v in vals.items()}
        metrics["token_ce" if self.stage == 1 else "refiner_l1"] = sum(extra) / len(self.val_pairs)
        if acc:
            metrics["token_acc"] = sum(acc) / len(self.val_pairs)
        return metrics

    def export(self, model: nn.Module, path: str) -> Optional[str]:
        out = path + ".pt"
        save_restorevar(out, model)
        return out


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
        with torch.no_grad(), torch.autocast(gt_pm1.device.type, enabled=False):
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
        tmp = out + ".tmp"
        torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, tmp)
        os.replace(tmp, out)
        return out


# ---------------------------------------------------------------------------------------------------------------
# Data and assembly
# ---------------------------------------------------------------------------------------------------------------
def build_val_pairs(cfg, size: int) -> List[Dict[str, torch.Tensor]]:
    """Held-out pairs resized to the model's size with Lanczos (the restorevar protocol): ``eval.benchmarks``,
    at most ``train.val_images``, round-robin over the benchmarks."""
    if cfg.train.val_every <= 0 or cfg.train.val_images <= 0:
        return []
    sets = [benchmark_dataset(n, cfg.eval.root) for n in expand_names(list(cfg.eval.benchmarks))]
    pairs, i = [], 0
    while len(pairs) < cfg.train.val_images and any(i < len(s) for s in sets):
        for s in sets:
            if i < len(s) and len(pairs) < cfg.train.val_images:
                item = s[i]
                pairs.append({k: resize_lanczos_pil(item[k].float(), size) for k in ("lq", "gt")})
        i += 1
    return pairs


def build_restorevar_task(cfg, stage: int, announce=print) -> TrainTask:
    rv = cfg.restorevar
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
