"""``varformer train distill``: VARestorer's one-step distillation as a stage of the shared trainer (checks,
data, task, memory plan). The losses and the step are ``distill_task``; the networks ``distill_models``; the
settings ``distill_config`` (``train.loss:``); docs/varestorer.md, "Training (reconstructed)".

    STAGE = distill_stage()          # the StageSpec the method's spec lists
"""
from __future__ import annotations

from functools import partial
from typing import Callable, List, Tuple

import torch
from omegaconf import OmegaConf

from varformer.data.resize import resize_lanczos_pil
from varformer.data.roots import resolve_root
from varformer.data.sr_degradations import settings_from
from varformer.data.sr_train import SRTrainingDataset, list_sr_sources
from varformer.errors import ConfigError, DataError, WeightsNotFoundError
from varformer.methods.api import InputsFound, StageSpec, settings_from_section
from varformer.methods.validation import validation_pairs
from varformer.runtime import resolve_device, resolve_precision
from varformer.varestorer.distill_config import VARestorerDistillConfig
from varformer.varestorer.distill_models import (cast_frozen_blocks, checkpoint_frozen, decoder_checkpoint_units,
                                                 freeze_for_distillation, student_from_files, teacher_of)
from varformer.varestorer.distill_task import DistillTask
from varformer.varestorer.distill_text import PromptFeatures
from varformer.varestorer.model import VARestorer
from varformer.varestorer.perceptual import find_trunk_weights, load_training_lpips
from varformer.varestorer.settings import VARestorerSettings
from varformer.varestorer.weights import INFINITY_FILE, SWINIR_FILE, VAE_FILE, locate_release_file

DESCRIPTION = ("one-step distillation (a reconstruction: the release has no training code): LoRA of the student "
               "on the LQ long pyramid, KL to the frozen teacher on the HQ pyramid + MSE + LPIPS of the "
               "straight-through decode")


def loss_config(cfg) -> VARestorerDistillConfig:
    """``train.loss`` as its dataclass, validated."""
    obj = OmegaConf.to_object(cfg.train.loss) if OmegaConf.is_config(cfg.train.loss) else cfg.train.loss
    if not isinstance(obj, VARestorerDistillConfig):
        raise ConfigError("the distill stage needs VARestorer's train.loss section (method: varestorer)")
    return obj.validate()


def model_settings(cfg) -> VARestorerSettings:
    return settings_from_section(VARestorerSettings, cfg.model)


def training_precision(cfg) -> str:
    return resolve_precision(cfg.train.precision, resolve_device(cfg.train.device), warn=False)


def check_settings(cfg) -> tuple:
    """(loss config, model settings) after every config rule of the stage (nothing read)."""
    loss, s = loss_config(cfg), model_settings(cfg)
    if not s.lora_rank:
        raise ConfigError("the distillation trains the LoRA adapters: model.lora_rank must be > 0 (the release: 32)")
    if cfg.data.crop_size != s.image_size:
        raise ConfigError(f"data.crop_size={cfg.data.crop_size}, but this VARestorer works on {s.image_size}x"
                          f"{s.image_size} images (last scale {s.patch_nums[-1]} x 16): set data.crop_size="
                          f"{s.image_size}")
    if loss.preclean_lq and not s.swinir:
        raise ConfigError("train.loss.preclean_lq=true runs SwinIR on the LQ: it needs model.swinir=true (or set "
                          "train.loss.preclean_lq=false)")
    if loss.frozen_dtype == "bf16" and training_precision(cfg) != "bf16":
        raise ConfigError(f"train.loss.frozen_dtype=bf16 stores the frozen blocks in bf16, which needs bf16 autocast, "
                          f"but this run's precision is {training_precision(cfg)} (train.precision="
                          f"{cfg.train.precision}): set train.precision=bf16 or train.loss.frozen_dtype=fp32")
    if loss.text_encoder == "random" and not loss.random_init_backbone:
        raise ConfigError("train.loss.text_encoder=random gives meaningless text features: only for random-init "
                          "runs (train.loss.random_init_backbone=true); the method uses t5")
    if cfg.train.grad_clip < 0:
        raise ConfigError(f"train.grad_clip must be >= 0, got {cfg.train.grad_clip}")
    return loss, s


def _locate(filename: str, path, local_files_only: bool):
    """(where a frozen file is, a note) without downloading: a file only on the hub is a note (downloaded at
    start) unless the hub is off-limits, then the one-line error."""
    try:
        return str(locate_release_file(filename, path, local_files_only=True)), None
    except WeightsNotFoundError:
        if path is not None or local_files_only:
            raise
    return (f"{filename} not found locally", f"{filename} will be downloaded from the Hugging Face hub at start "
                                             "(model.local_files_only=true forbids it)")


def frozen_files(cfg, loss: VARestorerDistillConfig, s: VARestorerSettings) -> List[Tuple[str, str, object]]:
    """(what, file name, configured path) of every frozen weights file the run reads."""
    files = [("Infinity (teacher and student base)", INFINITY_FILE, loss.infinity_path),
             ("BSQ-VAE", VAE_FILE, cfg.model.vae_path)]
    return files + ([("SwinIR", SWINIR_FILE, cfg.model.swinir_path)] if s.swinir else [])


def check_inputs(cfg) -> InputsFound:
    """The stage's rules, then its weight files located (not read, not downloaded)."""
    loss, s = check_settings(cfg)
    found = InputsFound()
    if loss.random_init_backbone:
        found.weights.append("Infinity (teacher, student base), BSQ-VAE, SwinIR, LPIPS trunk: RANDOM-INIT "
                             "(train.loss.random_init_backbone=true: tests and the demo only)")
    else:
        for what, filename, path in frozen_files(cfg, loss, s):
            where, note = _locate(filename, path, bool(cfg.model.local_files_only))
            found.weights.append(f"{what}: {where}")
            found.notes += [note] if note else []
        if loss.needs_decode and loss.lpips_weight > 0:
            found.weights.append(f"LPIPS ({loss.lpips_net}) trunk: "
                                 f"{find_trunk_weights(loss.lpips_net, loss.lpips_weights)}")
    if loss.text_encoder == "t5":
        found.notes.append(f"prompt features from the text cache; {cfg.model.text_model} is loaded only for prompts "
                           "not in it (fill it first: varformer convert varestorer-captions ... --encode)")
    if not loss.needs_teacher:
        found.notes.append(f"no teacher (train.loss.bit_loss={loss.bit_loss}, weight {loss.bit_loss_weight:g}): "
                           "an ablation of the method")
    return found


def training_data(cfg) -> SRTrainingDataset:
    loss = loss_config(cfg)
    if not cfg.data.root:
        raise DataError("data.root is not set: a folder of clean images or Infinity metadata (.jsonl), e.g. "
                        "data.root=demo:train/clean for the built-in demo set")
    root = resolve_root(cfg.data.root)
    try:
        return SRTrainingDataset(list_sr_sources(root), size=cfg.data.crop_size, resize_short=cfg.data.resize_short,
                                 flip=cfg.data.flip, seed=cfg.train.seed, degradation=settings_from(loss.degradation),
                                 caption_source=loss.caption_source, fixed_prompt=loss.fixed_prompt,
                                 short_caption_prob=loss.short_caption_prob)
    except DataError as e:
        if loss.caption_source == "jsonl" and "needs Infinity metadata" in str(e):
            raise DataError(f"{e}: caption the images into a list first (varformer convert varestorer-captions "
                            f"{cfg.data.root} -o captions.jsonl, then data.root=captions.jsonl), or train with "
                            "train.loss.caption_source=fixed") from None
        raise


def build_student(cfg, loss: VARestorerDistillConfig, s: VARestorerSettings, announce: Callable[[str], None]
                  ) -> VARestorer:
    if loss.random_init_backbone:
        announce("model: RANDOM-INIT Infinity, BSQ-VAE and SwinIR (train.loss.random_init_backbone=true): tests and "
                 "the demo only")
        return VARestorer(**s.constructor_kwargs(), drop_path_rate=loss.student_drop_path)
    lfo = bool(cfg.model.local_files_only)
    files = [str(locate_release_file(f, path, lfo)) for _, f, path in frozen_files(cfg, loss, s)]
    announce(f"model: student and teacher base from {files[0]}, VAE {files[1]}"
             + (f", SwinIR {files[2]}" if s.swinir else ""))
    return student_from_files(s, files[0], files[1], files[2] if s.swinir else None,
                              drop_path_rate=loss.student_drop_path)


def build_task(cfg, announce: Callable[[str], None] = print) -> DistillTask:
    loss, s = check_settings(cfg)
    student = build_student(cfg, loss, s, announce)
    n_lora = len(freeze_for_distillation(student))
    if loss.frozen_dtype == "bf16":
        cast_frozen_blocks(student, torch.bfloat16)
    teacher = teacher_of(student, shared=loss.teacher_shares_weights) if loss.needs_teacher else None
    lpips = None
    if loss.needs_decode and loss.lpips_weight > 0:
        lpips = load_training_lpips(loss.lpips_net, loss.lpips_weights, random_trunk=loss.random_init_backbone)
    if cfg.train.grad_checkpointing:
        units = decoder_checkpoint_units(student) if loss.needs_decode else []
        checkpoint_frozen(units + ([] if lpips is None else list(lpips.net.children())))
    text = PromptFeatures.from_config(loss.text_encoder, cfg.model, s.text_channels)
    announce(f"VARestorer distill: {n_lora} LoRA tensors (rank {s.lora_rank}) train; bit loss {loss.bit_loss} "
             f"x{loss.bit_loss_weight:g} ({loss.bit_loss_reduction}), MSE x{loss.mse_weight:g}, LPIPS "
             f"({loss.lpips_net}) x{loss.lpips_weight:g}; student attention "
             f"{'full' if loss.cross_scale_attention else 'BLOCK-CAUSAL (ablation)'}; teacher "
             + ("none" if teacher is None else
                ("sharing the student base" if loss.teacher_shares_weights else "a copy")
                + f", temperature {loss.teacher_temperature:g}, cfg {loss.teacher_cfg:g}, text {loss.teacher_text}")
             + f"; frozen blocks {loss.frozen_dtype}; text {text.identity}")
    pairs = validation_pairs(cfg, partial(resize_lanczos_pil, size=s.image_size))
    random_init = bool(loss.random_init_backbone)
    return DistillTask(student, teacher, loss, text, lpips, cfg.train.weight_decay, pairs, cfg.eval.batch_size,
                       store_frozen_params=random_init, export_frozen=random_init)


def released_size(cfg) -> bool:
    return model_settings(cfg).constructor_kwargs() == VARestorerSettings().constructor_kwargs()


def distill_stage() -> StageSpec:
    def estimate(cfg, micro: int, precision: str):
        # start-up time: the fake-tensor machinery only --dry-run needs
        from varformer.varestorer.distill_memory import estimate_distill_memory
        return estimate_distill_memory(cfg, micro, precision)

    return StageSpec("distill", DESCRIPTION, build_task=build_task, check_inputs=check_inputs,
                     training_data=training_data, official_global_batch=0, official_layout="",
                     lr_scales_with_batch=False, released_size=released_size, estimate_memory=estimate)
