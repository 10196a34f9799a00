"""``run_training(stage, cfg)``: what ``varformer train stage1|stage2|decoder`` and the scripts call (torchrun-ready).
``model.method`` picks the method: ``varformer`` (``stages``) or ``restorevar`` (``restorevar_stages``; its
``decoder`` stage is the decoder fine-tuning, not the authors' code)."""
from __future__ import annotations

import os
import sys

from varformer.config import METHODS, save_config, to_yaml
from varformer.data.train_sets import build_training_dataset
from varformer.errors import ConfigError
from varformer.training.distributed import cleanup_distributed, seed_everything, setup_distributed
from varformer.training.trainer import FitResult, Trainer
from varformer.training.restorevar_stages import DECODER_STAGE, build_restorevar_task
from varformer.training.stages import build_task, build_train_dataset

STAGES = {"stage1": 1, "stage2": 2, "decoder": DECODER_STAGE}


def run_training(stage: int, cfg, progress: bool = True, print_config: bool = True) -> FitResult:
    method = cfg.model.method
    if method not in METHODS:
        raise ConfigError(f"model.method must be one of {', '.join(METHODS)}, got {method!r}")
    if stage not in (1, 2) and not (method == "restorevar" and stage == DECODER_STAGE):
        raise ConfigError(f"stage must be 1 or 2{' or decoder' if method == 'restorevar' else ''} for {method}, "
                          f"got {stage}" + (" (the decoder stage is RestoreVAR's: model.method=restorevar)"
                                            if stage == DECODER_STAGE else ""))
    if method == "varformer" and cfg.model.stage != stage:
        cfg.model.stage = stage  # the command names the stage; the config's model.stage follows it
    info = setup_distributed(cfg.train.device)
    try:
        def announce(text: str) -> None:
            if info.is_main:
                print(text, file=sys.stderr, flush=True)

        out_dir = cfg.train.output_dir
        if info.is_main:
            os.makedirs(out_dir, exist_ok=True)
            if print_config:
                print(to_yaml(cfg), flush=True)
            announce(f"resolved config saved to {save_config(cfg, out_dir)}")
        seed_everything(cfg.train.seed, info.rank)  # official: 114514 + rank
        if method == "varformer":
            task = build_task(cfg, stage, announce)
            dataset = build_train_dataset(cfg, stage)
        else:  # RestoreVAR: degraded/clean pairs of the task mixture in every stage
            task = build_restorevar_task(cfg, stage, announce)
            dataset = build_training_dataset(cfg.data, 2, cfg.train.seed, task_order=cfg.demo.task_order)
        announce(f"training data: {len(dataset)} samples per nominal epoch under {cfg.data.root}")
        trainer = Trainer(task, dataset, cfg.train, cfg.data, info, out_dir, config_yaml=to_yaml(cfg),
                          progress=progress)
        result = trainer.fit()
        label = f"stage {stage}" if method == "varformer" else f"RestoreVAR stage {stage}"
        announce(f"{label}: {result.status} at step {result.step}; last checkpoint {result.checkpoint}")
        return result
    finally:
        cleanup_distributed()
