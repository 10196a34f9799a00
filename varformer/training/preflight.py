"""What a training run checks before it builds anything: the numbers of its config, its training data, its
validation set and its weight files. ``varformer train`` runs these first, so a missing folder or file stops the
run in seconds with one line instead of after the model (and VGG19) were built; ``--dry-run`` prints what they
found (``varformer.training.plan``).

Weight files are located, not loaded: a backbone file is looked up where the run will look (the path in the
config, ``checkpoints/``, the Hugging Face cache); a VarFormer file (``model.weights``, ``model.stage1_weights``)
is read memory-mapped, which reads its metadata, not its tensors.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

from huggingface_hub import constants as hf_constants
from torch.utils.data import Dataset

from varformer.backbone.hub import VAE_FILENAME, VAR_REPO_ID, resolve_weight_file, var_filename
from varformer.data.benchmark_data import benchmark_dataset
from varformer.data.catalog import expand_names
from varformer.data.train_sets import build_training_dataset
from varformer.errors import CheckpointMismatchError, ConfigError, DataError, WeightsNotFoundError
from varformer.model.settings import VarFormerSettings
from varformer.model.weights_files import inspect_weights
from varformer.runtime import check_precision
from varformer.training.losses import find_vgg19_weights


@dataclass
class Preflight:
    dataset: Dataset                                        # the training data (files listed, none read yet)
    validation: List[Tuple[str, int]] = field(default_factory=list)  # (benchmark, images validated on)
    weights: List[str] = field(default_factory=list)        # what each weight file is and where it was found
    notes: List[str] = field(default_factory=list)          # things that will happen at start (e.g. a download)


def check_train_settings(cfg, data_cfg) -> None:
    """The ``train`` and ``data`` numbers a run cannot start with (checked before anything is built)."""
    for key in ("total_iters", "log_every", "save_every", "val_every", "image_every", "val_images", "keep_last",
                "global_batch_size"):
        if getattr(cfg, key) < 0:
            raise ConfigError(f"train.{key} must be >= 0, got {getattr(cfg, key)}")
    if cfg.total_iters == 0:
        raise ConfigError("train.total_iters must be > 0")
    if cfg.log_every == 0:
        raise ConfigError("train.log_every must be > 0")
    if data_cfg.batch_size < 1:
        raise ConfigError(f"data.batch_size must be >= 1, got {data_cfg.batch_size}")
    if data_cfg.num_workers < 0:
        raise ConfigError(f"data.num_workers must be >= 0, got {data_cfg.num_workers}")
    if cfg.lr <= 0:
        raise ConfigError(f"train.lr must be > 0, got {cfg.lr}")
    check_precision(cfg.precision)


def check_run_inputs(cfg, stage: int) -> Preflight:
    """Every check above, in order of cost; returns what was found. Raises one ``VarformerError`` line."""
    check_train_settings(cfg.train, cfg.data)
    if cfg.model.method == "restorevar":
        # every RestoreVAR stage trains on degraded/clean pairs of the task mixture; its weight files are checked
        # by its task builder before anything is loaded (training/restorevar_stages.py)
        dataset = build_training_dataset(cfg.data, 2, cfg.train.seed, task_order=cfg.demo.task_order)
        return Preflight(dataset, validation_sets(cfg) if cfg.eval.benchmarks else [])
    VarFormerSettings.from_config(cfg.model).replace(stage=stage)
    dataset = build_training_dataset(cfg.data, stage, cfg.train.seed, task_order=cfg.demo.task_order)
    found = Preflight(dataset, validation_sets(cfg))
    check_weight_files(cfg, stage, found)
    return found


def validation_sets(cfg) -> List[Tuple[str, int]]:
    """The validation benchmarks and how many images of each the run validates on (``[]``: no validation)."""
    t = cfg.train
    if t.val_every <= 0 or t.val_images <= 0:
        return []
    names = expand_names(list(cfg.eval.benchmarks))
    if not names:
        raise ConfigError(f"train.val_every={t.val_every} but eval.benchmarks is empty: name the validation set "
                          "(e.g. eval.benchmarks=[test100]) or set train.val_every=0")
    sizes = []
    for name in names:
        try:
            sizes.append(len(benchmark_dataset(name, cfg.eval.root)))
        except DataError as e:
            raise DataError(f"validation set: {e} (eval.root={cfg.eval.root}); set eval.root to the folder that "
                            f"holds it, or train.val_every=0 to train without validation") from None
    left, i = t.val_images, 0
    counts = [0] * len(names)
    while left > 0 and any(i < n for n in sizes):  # round-robin, as build_val_pairs takes them
        for j, n in enumerate(sizes):
            if i < n and left > 0:
                counts[j] += 1
                left -= 1
        i += 1
    return [(name, c) for name, c in zip(names, counts)]


def _hub_offline(model_cfg) -> bool:
    env = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    return bool(model_cfg.local_files_only or env or hf_constants.HF_HUB_OFFLINE)


def _locate_backbone_file(what: str, filename: str, path: Optional[str], model_cfg, found: Preflight) -> None:
    try:
        where = resolve_weight_file(filename, path=path, local_files_only=True)
        found.weights.append(f"{what}: {where}")
    except WeightsNotFoundError:
        if path is not None or _hub_offline(model_cfg):
            raise
        found.weights.append(f"{what}: {filename} not found locally")
        found.notes.append(f"{filename} will be downloaded from the Hugging Face repository {VAR_REPO_ID} at start "
                           "(model.local_files_only=true forbids it)")


def _check_stage1_file(path: str, settings: VarFormerSettings) -> str:
    info = inspect_weights(path)
    if info.kind not in ("model", "training") or info.stage != 1:
        raise CheckpointMismatchError(f"model.stage1_weights: {path} is {info.describe()}; it must be a stage-1 "
                                      "run's final_ema.pt or ckpt_*.pt")
    s1 = info.settings
    if (s1.depth, s1.vae_ch) != (settings.depth, settings.vae_ch) or s1.n_cross < settings.n_cross:
        raise CheckpointMismatchError(
            f"model.stage1_weights: {path} is {info.describe()}, this run's model has VAR depth {settings.depth}, "
            f"width {settings.vae_ch} and {settings.n_cross} cross-attention blocks")
    return f"stage 1: {path} ({info.describe()})"


def check_weight_files(cfg, stage: int, found: Preflight) -> None:
    m = cfg.model
    settings = VarFormerSettings.from_config(m).replace(stage=stage)
    if m.weights:
        info = inspect_weights(m.weights)
        if info.kind not in ("model", "official") or (info.stage is not None and info.stage != stage):
            raise CheckpointMismatchError(f"model.weights: {m.weights} is {info.describe()}; it must be a stage-{stage} "
                                          "VarFormer model file (or the official checkpoint for stage 2)")
        found.weights.append(f"all weights: {m.weights} ({info.describe()})")
    elif m.random_init_backbone:
        found.weights.append("VQVAE/VAR backbone: RANDOM-INIT (model.random_init_backbone=true: tests and the demo)")
    else:
        _locate_backbone_file("VQVAE", VAE_FILENAME, m.vae_path, m, found)
        _locate_backbone_file(f"VAR d{m.depth}", var_filename(m.depth), m.var_path, m, found)
    loss = cfg.train.loss
    if stage == 2 and loss.perceptual > 0:
        found.weights.append(f"VGG19 (perceptual loss): {find_vgg19_weights(loss.vgg_path)}")
    if stage == 2 and m.stage1_weights:
        if not os.path.isfile(m.stage1_weights):
            raise WeightsNotFoundError(f"model.stage1_weights: {m.stage1_weights} does not exist (a stage-1 run's "
                                       "final_ema.pt or ckpt_*.pt)")
        found.weights.append(_check_stage1_file(m.stage1_weights, settings))
    elif stage == 2:
        found.notes.append("model.stage1_weights is not set: the adapter and cross-attention start from random "
                           "weights (an official option; the usual start is a stage-1 run's final_ema.pt)")
