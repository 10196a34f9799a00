"""What differs between the two training stages: the model part, what is frozen, the parameter groups, the losses,
the data and the validation set. Everything else is the shared ``Trainer``.

Stage 1 (``VarFormerStage1``): Adapter + cross-attention (+ VAR embeddings/head, as the official code trains
them) on the frozen VQVAE/VAR; losses 0.1 x token CE + 0.5 x feature MSE; clean images as LQ and GT (official).
Stage 2 (``VarFormer``): the full restorer; L1 + 0.5 x PSNR + 1.0 x VGG19 + the two stage-1 terms; the task
mixture. Started from a stage-1 run (``model.stage1_weights``), it keeps the adapter, cross-attention and VAR
embedding/head weights stage 1 learned (EMA), unlike the official code, which reverts the online copy's VAR
embeddings/head to the original VAR file (docs/official-differences.md).
"""
from __future__ import annotations

import os
from typing import Dict, List, Optional

import torch
from torch import nn
from torch.utils.data import Dataset

from varformer.data.benchmark_data import benchmark_dataset
from varformer.data.catalog import expand_names
from varformer.data.train_sets import build_training_dataset
from varformer.errors import CheckpointMismatchError, ConfigError, WeightsNotFoundError
from varformer.data.resize import resize_bilinear
from varformer.metrics import psnr, ssim
from varformer.model import VarFormerSettings, build_varformer, read_varformer, save_varformer
from varformer.model.strict_load import load_weights
from varformer.model.weights_files import inspect_weights
from varformer.training.activation_checkpointing import enable_activation_checkpointing
from varformer.training.losses import VarFormerLoss
from varformer.training.trainer import StepOutput, TrainTask

VAL_SIZE = 256


# ---------------------------------------------------------------------------------------------------------------
# Model: build, load, freeze
# ---------------------------------------------------------------------------------------------------------------
def build_model(cfg, stage: int, announce=print) -> nn.Module:
    """The stage's model with its backbone weights loaded (or, for tests/demo, an announced random backbone)."""
    m = cfg.model
    settings = VarFormerSettings.from_config(m).replace(stage=stage)
    if stage == 2 and settings.prior == "none" and m.stage1_weights:
        raise ConfigError("model.prior=none (the ablation without the VAR prior) has no Adapter or cross-attention: "
                          "model.stage1_weights has nothing to load into; leave it unset")
    model = build_varformer(settings, input_weight_init=cfg.demo.input_weight_init)
    if m.weights:
        _, sd = read_varformer(m.weights)
        load_weights(model, sd, source=m.weights)
        announce(f"model: all weights from {m.weights}")
    elif m.random_init_backbone:
        announce("model: RANDOM-INIT VQVAE/VAR backbone (model.random_init_backbone=true): for tests and the demo "
                 "only, the priors carry no ImageNet knowledge")
    else:
        model.load_backbone(m.vae_path, m.var_path, local_files_only=m.local_files_only)
        announce(f"model: VQVAE and VAR d{m.depth} weights loaded" if model.var is not None
                 else "model: VQVAE weights loaded (no VAR: model.prior=none)")
    if stage == 2 and m.stage1_weights:
        n = load_stage1_into_stage2(model, m.stage1_weights,
                                    include_backbone=bool(m.random_init_backbone and not m.weights))
        announce(f"model: {n} adapter / cross-attention / VAR embedding+head tensors from stage 1 "
                 + ("(and its random-init backbone) " if m.random_init_backbone and not m.weights else "")
                 + f"({m.stage1_weights})")
    return model


def freeze_for(model: nn.Module, stage: int, formulation: str) -> None:
    """Official: VQVAE + VAR blocks frozen, everything else trains (VAR embeddings and head included).
    Paper: the whole VAR frozen; in stage 2 also the Adapter and cross-attention (no paper term reaches them)."""
    model.freeze_official()
    if formulation == "paper" and model.var is not None:
        model.var.requires_grad_(False)
        if stage == 2:
            model.adapter.requires_grad_(False)
            model.cross_attn.requires_grad_(False)


def _stage1_state(path: str) -> Dict[str, torch.Tensor]:
    """Stage-1 weights from a training checkpoint of ours (its EMA, as the official code uses ``params_ema``) or
    from a saved stage-1 model file (both read with ``weights_only=True``)."""
    if not os.path.isfile(path):
        raise WeightsNotFoundError(f"model.stage1_weights: {path} does not exist (a stage-1 run's ckpt_*.pt or "
                                   "final_ema.pt)")
    info = inspect_weights(path)
    if info.kind == "training" and info.stage == 1:
        sd = dict(info.content["model"])
        sd.update(info.content["ema"])
        return sd
    if info.kind != "model" or info.stage != 1:
        raise CheckpointMismatchError(f"model.stage1_weights: {path} is {info.describe()}, not a stage-1 run's "
                                      "final_ema.pt or ckpt_*.pt")
    return read_varformer(path)[1]


def load_stage1_into_stage2(model: nn.Module, path: str, include_backbone: bool = False) -> int:
    """Copy the adapter, the first ``n_cross`` cross-attention blocks and the trained VAR embeddings/head of a
    stage-1 model into the stage-2 model (shapes checked; nothing else is touched). ``include_backbone``: also
    the frozen VQVAE/VAR blocks (a random-init backbone, which only the stage-1 checkpoint holds)."""
    sd = _stage1_state(path)
    own = model.state_dict()
    take = {}
    for k, v in sd.items():
        if include_backbone and k.startswith("vae.") and k in own:
            take[k] = v
            continue
        if not (k.startswith("adapter.") or k.startswith("cross_attn.") or k.startswith("var.")):
            continue
        if (k.startswith("var.blocks.") and not include_backbone) or k not in own:
            continue  # frozen VAR blocks come from the VAR file; stage 2 keeps only its first n_cross blocks
        if own[k].shape != v.shape:
            raise CheckpointMismatchError(f"stage-1 tensor {k} has shape {tuple(v.shape)}, stage 2 expects "
                                          f"{tuple(own[k].shape)} (different depth or width?)")
        take[k] = v
    if not any(k.startswith("adapter.") for k in take):
        raise CheckpointMismatchError(f"{path} holds no adapter weights: not a stage-1 checkpoint")
    model.load_state_dict(take, strict=False)
    return len(take)


# ---------------------------------------------------------------------------------------------------------------
# The task
# ---------------------------------------------------------------------------------------------------------------
class VarFormerTask(TrainTask):
    """One training step of either stage: GT tokens and clean latent from the frozen tokenizer (no graph), the
    model's training outputs, the stage's weighted losses."""

    def __init__(self, model: nn.Module, loss: VarFormerLoss, stage: int,
                 val_pairs: Optional[List[Dict[str, torch.Tensor]]] = None, val_batch: int = 4,
                 random_backbone: bool = False, input_weight_lr_scale: float = 1.0):
        super().__init__()
        self.model, self.loss, self.stage = model, loss, stage
        if input_weight_lr_scale <= 0:
            raise ConfigError(f"demo.input_weight_lr_scale must be > 0, got {input_weight_lr_scale}")
        self.input_weight_lr_scale = input_weight_lr_scale
        # a random-init backbone exists only in its checkpoints: store it with them
        self.store_frozen_params = random_backbone
        self.val_pairs = val_pairs or []
        self.val_batch = val_batch
        self._val_visuals: Dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def clean_targets(self, gt_pm1: torch.Tensor):
        """GT token maps and the cumulative reconstruction after all scales, float32 (quantizer code search)."""
        vae = self.model.vae
        with torch.autocast(device_type=gt_pm1.device.type, enabled=False):
            idx, fhats = vae.f_to_indices_and_fhats(vae.encode(gt_pm1.float()))
        return idx, fhats[-1]

    def parameter_groups(self) -> List[Dict[str, object]]:
        """One group, or two when ``demo.input_weight_lr_scale`` gives stage 2's global-residual blend weight its
        own learning rate (an identity start opens only as fast as Adam moves that weight)."""
        groups = super().parameter_groups()
        blend = getattr(self.model, "input_weight", None)
        if self.input_weight_lr_scale == 1 or blend is None or not blend.requires_grad:
            return groups
        rest = [p for p in groups[0]["params"] if p is not blend]
        return [{"name": "model", "params": rest},
                {"name": "input_weight", "params": [blend], "lr_scale": self.input_weight_lr_scale}]

    def forward(self, batch) -> StepOutput:
        lq, gt = batch["lq"], batch["gt"]
        gt_pm1 = gt * 2 - 1
        # without the VAR prior (ablation) there is no rollout to give token or feature targets to
        gt_tokens, gt_feat = self.clean_targets(gt_pm1) if self.model.var is not None else (None, None)
        out = self.model.training_outputs(lq)
        lt = self.loss(out, gt_pm1, gt_tokens, gt_feat)
        visuals = {"lq": lq, "output": out.restored.detach().float().add(1).mul(0.5), "gt": gt}
        return StepOutput(loss=lt.total, terms=lt.terms, visuals=visuals,
                          dae_weights=getattr(out, "dae_weights", None) or {})

    def validate(self, model: nn.Module, step: int) -> Dict[str, float]:
        if not self.val_pairs:
            return {}
        device = next(model.parameters()).device
        vals = {"psnr": [], "ssim": [], "psnr_input": []}
        loss_sum, outs = 0.0, []
        for i in range(0, len(self.val_pairs), self.val_batch):
            chunk = self.val_pairs[i:i + self.val_batch]
            lq = torch.stack([p["lq"] for p in chunk]).to(device)
            gt = torch.stack([p["gt"] for p in chunk]).to(device)
            out = model(lq)
            vals["psnr"] += [float(v) for v in psnr(out, gt, crop_border=4)]
            vals["ssim"] += [float(v) for v in ssim(out, gt, crop_border=4)]
            vals["psnr_input"] += [float(v) for v in psnr(lq, gt, crop_border=4)]
            image_loss = self.loss.image_loss(out.float() * 2 - 1, gt * 2 - 1)
            if image_loss is not None:
                loss_sum += float(image_loss) * len(chunk)
            outs.append((lq[:2].cpu(), out[:2].cpu(), gt[:2].cpu()))
        lq, out, gt = (torch.cat(t) for t in zip(*outs))
        self._val_visuals = {"lq": lq[:4], "output": out[:4], "gt": gt[:4]}
        metrics = {k: sum(v) / len(v) for k, v in vals.items()}
        if self.stage == 2:  # the image terms of the training loss on the same held-out images every time
            metrics["loss"] = loss_sum / len(self.val_pairs)
        return metrics

    def validation_visuals(self) -> Dict[str, torch.Tensor]:
        return self._val_visuals

    def export(self, model: nn.Module, path: str) -> Optional[str]:
        out = path + ".pt"
        tmp = path + ".tmp.pt"
        save_varformer(tmp, model)
        os.replace(tmp, out)
        return out


# ---------------------------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------------------------
def build_train_dataset(cfg, stage: int) -> Dataset:
    return build_training_dataset(cfg.data, stage, cfg.train.seed, task_order=cfg.demo.task_order)


def _resize_256(x: torch.Tensor) -> torch.Tensor:
    # the evaluator's paper protocol: cv2 INTER_LINEAR (half-pixel centres, no antialiasing) to 256x256
    return resize_bilinear(x, VAL_SIZE).clamp(0, 1)


def build_val_pairs(cfg) -> List[Dict[str, torch.Tensor]]:
    """Held-out pairs for validation, resized to 256x256 as in the official validation (paper protocol):
    ``eval.benchmarks`` under ``eval.root`` (each benchmark's default root when unset, e.g. the demo set for
    ``demo``); at most ``train.val_images``, taken round-robin across the benchmarks."""
    if cfg.train.val_every <= 0 or cfg.train.val_images <= 0:
        return []
    names = expand_names(list(cfg.eval.benchmarks))
    if not names:
        return []
    sets = [benchmark_dataset(n, cfg.eval.root) for n in names]
    pairs, i = [], 0
    while len(pairs) < cfg.train.val_images and any(i < len(s) for s in sets):
        for s in sets:
            if i < len(s) and len(pairs) < cfg.train.val_images:
                item = s[i]
                pairs.append({"lq": _resize_256(item["lq"].float()), "gt": _resize_256(item["gt"].float())})
        i += 1
    return pairs


def build_task(cfg, stage: int, announce=print) -> VarFormerTask:
    val_pairs = build_val_pairs(cfg)  # images read before the model is built: a bad file stops the run early
    model = build_model(cfg, stage, announce)
    freeze_for(model, stage, cfg.train.loss.formulation)
    if cfg.train.grad_checkpointing:
        n = enable_activation_checkpointing(model)
        announce(f"activation checkpointing on for {n} modules")
    loss = VarFormerLoss.from_config(cfg.train.loss, stage, announce, with_prior=model.var is not None)
    announce(f"stage {stage} losses ({cfg.train.loss.formulation}): "
             + " + ".join(f"{w:g} x {k}" for k, w in loss.weights.items()))
    return VarFormerTask(model, loss, stage, val_pairs, val_batch=cfg.eval.batch_size,
                         random_backbone=bool(cfg.model.random_init_backbone and not cfg.model.weights),
                         input_weight_lr_scale=cfg.demo.input_weight_lr_scale)
