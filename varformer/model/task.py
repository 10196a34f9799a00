"""VarFormer's two training stages on the shared trainer: the model part, what is frozen, the parameter groups,
the losses, the data, the validation and the export. Everything else is the shared ``Trainer``.

Stage 1 (``VarFormerStage1``): Adapter + cross-attention (+ VAR embeddings/head, as the official code trains
them) on the frozen VQVAE/VAR; losses 0.1 x token CE + 0.5 x feature MSE; clean images as LQ and GT (official).
Stage 2 (``VarFormer``): the full restorer; L1 + 0.5 x PSNR + 1.0 x VGG19 + the two stage-1 terms; the task
mixture. Started from a stage-1 run (``model.stage1_weights``), it keeps the adapter, cross-attention and VAR
embedding/head weights stage 1 learned (EMA), unlike the official code, which reverts the online copy's VAR
embeddings/head to the original VAR file (docs/official-differences.md).
"""
from __future__ import annotations

import os
from typing import Any, Dict, List, Mapping, Optional

import torch
from omegaconf import OmegaConf
from torch import nn
from torch.utils.data import Dataset

from varformer.backbone.hub import VAE_FILENAME, locate_backbone_file, var_filename
from varformer.backbone.vgg19 import find_vgg19_weights
from varformer.checkpoints import ema_weights, is_training_checkpoint, open_weights
from varformer.data.resize import resize_bilinear
from varformer.data.train_sets import build_training_dataset
from varformer.errors import CheckpointMismatchError, ConfigError, WeightsNotFoundError
from varformer.methods.api import InputsFound, StepOutput, TrainTask
from varformer.methods.validation import restoration_metrics, validation_pairs
from varformer.model.files import METHOD, load_weights, read_varformer, recognize, save_varformer
from varformer.model.loss import VarFormerLoss
from varformer.model.settings import VarFormerSettings
from varformer.model.unet import AttnBlock, PriorGuidance, ResnetBlock
from varformer.model.varformer import IMAGE_SIZE, build_varformer
from varformer.runtime import fp32_region

VAL_SIZE = 256
STAGES = {"stage1": 1, "stage2": 2}


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


def checkpointed_unet_modules(model: nn.Module) -> List[nn.Module]:
    """The U-Net's memory: res-blocks and attention at 256/128 px, and DAE + AFT (Swin windows, anchor attention);
    only inside the U-Net (the frozen VQVAE is built from the same block classes but never trains)."""
    roots = [getattr(model, name) for name in ("unet_encoder", "unet_decoder") if hasattr(model, name)]
    kinds = (ResnetBlock, AttnBlock, PriorGuidance)
    return [m for root in roots for m in root.modules() if isinstance(m, kinds)]


def settings_of_run(config: Mapping[str, Any], source: str) -> VarFormerSettings:
    """The model settings a training run's saved config names (its ``model`` section)."""
    model = config.get("model") or {}
    try:
        return VarFormerSettings(**{k: model[k] for k in VarFormerSettings.names() if k in model}).validate()
    except Exception as e:  # a config this version cannot read
        raise CheckpointMismatchError(f"{source}: training checkpoint with an unreadable model config ({e})") from None


def read_stage1(path: str) -> Dict[str, torch.Tensor]:
    """Stage-1 weights from a training checkpoint of ours (its EMA, as the official code uses ``params_ema``) or
    from a saved stage-1 model file (both read with ``weights_only=True``)."""
    if not os.path.isfile(path):
        raise WeightsNotFoundError(f"model.stage1_weights: {path} does not exist (a stage-1 run's ckpt_*.pt or "
                                   "final_ema.pt)")
    f = open_weights(path)
    if is_training_checkpoint(f.content):
        config = OmegaConf.to_container(OmegaConf.create(f.content.get("config") or "{}")) or {}
        if settings_of_run(config, path).stage == 1:
            return ema_weights(f.content)
    elif f.format is not None and VarFormerSettings.from_metadata(f.metadata, path).stage == 1:
        return read_varformer(path)[1]
    raise CheckpointMismatchError(f"model.stage1_weights: {path} is not a stage-1 VarFormer run's final_ema.pt or "
                                  "ckpt_*.pt")


def load_stage1_into_stage2(model: nn.Module, path: str, include_backbone: bool = False) -> int:
    """Copy the adapter, the first ``n_cross`` cross-attention blocks and the trained VAR embeddings/head of a
    stage-1 model into the stage-2 model (shapes checked; nothing else is touched). ``include_backbone``: also
    the frozen VQVAE/VAR blocks (a random-init backbone, which only the stage-1 checkpoint holds)."""
    sd = read_stage1(path)
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


def plot_dae_weights(weights: Mapping[str, torch.Tensor], title: str = "DAE scale weights"):
    """A matplotlib figure: x = VAR scale (patch size 1..16), y = mean weight over the batch, one line per level."""
    # imported here: matplotlib costs start-up time, and only runs that log figures need it
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt  # start-up (as above)

    patch_nums = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, w in weights.items():
        mean = w.detach().float().reshape(-1, w.shape[-1]).mean(0).cpu().numpy()
        ax.plot(range(len(mean)), mean, marker="o", label=name)
    n = next(iter(weights.values())).shape[-1]
    ax.set_xticks(range(n))
    ax.set_xticklabels([str(p) for p in patch_nums[:n]] if n <= len(patch_nums) else range(n))
    ax.set_xlabel("VAR scale (tokens per side)")
    ax.set_ylabel("mean weight")
    ax.set_title(title)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig



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
        with fp32_region(gt_pm1.device):
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

    def checkpointed_modules(self) -> List[nn.Module]:
        return checkpointed_unet_modules(self.model)

    def forward(self, batch) -> StepOutput:
        lq, gt = batch["lq"], batch["gt"]
        gt_pm1 = gt * 2 - 1
        # without the VAR prior (ablation) there is no rollout to give token or feature targets to
        gt_tokens, gt_feat = self.clean_targets(gt_pm1) if self.model.var is not None else (None, None)
        out = self.model.training_outputs(lq)
        lt = self.loss(out, gt_pm1, gt_tokens, gt_feat)
        visuals = {"lq": lq, "output": out.restored.detach().float().add(1).mul(0.5), "gt": gt}
        return StepOutput(loss=lt.total, terms=lt.terms, visuals=visuals,
                          extras=getattr(out, "dae_weights", None) or {})

    def figures(self, out: StepOutput, step: int) -> Dict[str, Any]:
        if not out.extras:
            return {}
        return {"dae/scale_weights": plot_dae_weights(out.extras, title=f"DAE scale weights, step {step}")}

    def validate(self, model: nn.Module, step: int) -> Dict[str, float]:
        def image_loss(lq, out, gt) -> Dict[str, float]:  # the image terms of the training loss (stage 2)
            value = self.loss.image_loss(out.float() * 2 - 1, gt * 2 - 1)
            return {"loss": float(value)} if value is not None and self.stage == 2 else {}

        metrics, self._val_visuals = restoration_metrics(model, self.val_pairs, self.val_batch, crop_border=4,
                                                         extra=image_loss)
        return metrics

    def validation_visuals(self) -> Dict[str, torch.Tensor]:
        return self._val_visuals

    def export(self, model: nn.Module, path: str) -> Optional[str]:
        return save_varformer(path + ".pt", model)


# ---------------------------------------------------------------------------------------------------------------
# What the stage specs call
# ---------------------------------------------------------------------------------------------------------------
def _resize_256(x: torch.Tensor) -> torch.Tensor:
    # the evaluator's paper protocol: cv2 INTER_LINEAR (half-pixel centres, no antialiasing) to 256x256
    return resize_bilinear(x, VAL_SIZE).clamp(0, 1)


def build_val_pairs(cfg) -> List[Dict[str, torch.Tensor]]:
    """Held-out pairs resized to 256x256 as in the official validation (paper protocol)."""
    return validation_pairs(cfg, _resize_256)


def training_data(cfg, stage: int) -> Dataset:
    return build_training_dataset(cfg.data, stage, cfg.train.seed, task_order=cfg.demo.task_order)


def build_task(cfg, stage: int, announce=print) -> VarFormerTask:
    val_pairs = build_val_pairs(cfg)  # images read before the model is built: a bad file stops the run early
    model = build_model(cfg, stage, announce)
    freeze_for(model, stage, cfg.train.loss.formulation)
    loss = VarFormerLoss.from_config(cfg.train.loss, stage, announce, with_prior=model.var is not None)
    announce(f"stage {stage} losses ({cfg.train.loss.formulation}): "
             + " + ".join(f"{w:g} x {k}" for k, w in loss.weights.items()))
    return VarFormerTask(model, loss, stage, val_pairs, val_batch=cfg.eval.batch_size,
                         random_backbone=bool(cfg.model.random_init_backbone and not cfg.model.weights),
                         input_weight_lr_scale=cfg.demo.input_weight_lr_scale)


def _stage1_file_line(path: str, settings: VarFormerSettings) -> str:
    try:
        f = open_weights(path)
    except CheckpointMismatchError as e:
        raise CheckpointMismatchError(f"model.stage1_weights: {e}") from None
    if is_training_checkpoint(f.content):
        config = OmegaConf.to_container(OmegaConf.create(f.content.get("config") or "{}")) or {}
        s1, what = settings_of_run(config, path), f"a training checkpoint (step {int(f.content['step'])})"
    elif f.format is not None:
        s1, what = VarFormerSettings.from_metadata(f.metadata, path), "a model file"
    else:
        s1, what = None, "not a VarFormer file"
    if s1 is None or s1.stage != 1:
        raise CheckpointMismatchError(f"model.stage1_weights: {path} is {what}"
                                      + (f" of stage {s1.stage}" if s1 is not None else "")
                                      + "; it must be a stage-1 run's final_ema.pt or ckpt_*.pt")
    if (s1.depth, s1.vae_ch) != (settings.depth, settings.vae_ch) or s1.n_cross < settings.n_cross:
        raise CheckpointMismatchError(
            f"model.stage1_weights: {path} is a stage-1 model with VAR depth {s1.depth}, width {s1.vae_ch} and "
            f"{s1.n_cross} cross-attention blocks, this run's model has VAR depth {settings.depth}, width "
            f"{settings.vae_ch} and {settings.n_cross} cross-attention blocks")
    return f"stage 1: {path} ({what}, VAR depth {s1.depth}, width {s1.vae_ch}, {s1.n_cross} cross-attention blocks)"


def check_inputs(cfg, stage: int) -> InputsFound:
    """The stage's settings and weight files, located (not loaded) where the run will look."""
    m = cfg.model
    settings = VarFormerSettings.from_config(m).replace(stage=stage)
    found = InputsFound()
    if cfg.data.crop_size != IMAGE_SIZE:  # found here, not at step 1 after the run folder was written
        raise ConfigError(f"data.crop_size={cfg.data.crop_size}, but VarFormer trains on {IMAGE_SIZE}x{IMAGE_SIZE} "
                          f"crops (its VQVAE's 16x16 latent); set data.crop_size={IMAGE_SIZE}")
    if m.weights:
        if not os.path.isfile(m.weights):
            raise WeightsNotFoundError(f"model.weights: {m.weights} does not exist")
        f = open_weights(m.weights)
        s = VarFormerSettings.from_metadata(f.metadata, m.weights) if f.format == METHOD else None
        official = f.format is None and recognize(f.content) is not None
        if (s is None and not official) or (s is not None and s.stage != stage):
            what = f"a stage-{s.stage} VarFormer model file" if s is not None else (
                f"a {f.format} model file" if f.format else "not a VarFormer weights file")
            raise CheckpointMismatchError(f"model.weights: {m.weights} is {what}; it must be a stage-{stage} "
                                          "VarFormer model file (or the official checkpoint for stage 2)")
        found.weights.append(f"all weights: {m.weights} (" + (f"a stage-{stage} VarFormer model file)" if s else
                                                               "the official VarFormer checkpoint)"))
    elif m.random_init_backbone:
        found.weights.append("VQVAE/VAR backbone: RANDOM-INIT (model.random_init_backbone=true: tests and the demo)")
    else:
        for what, filename, path in (("VQVAE", VAE_FILENAME, m.vae_path),
                                     (f"VAR d{m.depth}", var_filename(m.depth), m.var_path)):
            line, note = locate_backbone_file(what, filename, path, m.local_files_only)
            found.weights.append(line)
            found.notes += [note] if note else []
    loss = cfg.train.loss
    if stage == 2 and loss.perceptual > 0:
        found.weights.append(f"VGG19 (perceptual loss): {find_vgg19_weights(loss.vgg_path)}")
    if stage == 2 and m.stage1_weights:
        if not os.path.isfile(m.stage1_weights):
            raise WeightsNotFoundError(f"model.stage1_weights: {m.stage1_weights} does not exist (a stage-1 run's "
                                       "final_ema.pt or ckpt_*.pt)")
        found.weights.append(_stage1_file_line(m.stage1_weights, settings))
    elif stage == 2:
        found.notes.append("model.stage1_weights is not set: the adapter and cross-attention start from random "
                           "weights (an official option; the usual start is a stage-1 run's final_ema.pt)")
    return found
