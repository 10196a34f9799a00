"""``run_training(stage, cfg)``: what ``varformer train stage1|stage2`` and the scripts call (torchrun-ready)."""
from __future__ import annotations

import os
import sys

from varformer.config import save_config, to_yaml
from varformer.errors import ConfigError
from varformer.training.distributed import cleanup_distributed, seed_everything, setup_distributed
from varformer.training.trainer import FitResult, Trainer
from varformer.training.stages import build_task, build_train_dataset

STAGES = {"stage1": 1, "stage2": 2}


def run_training(stage: int, cfg, progress: bool = True, print_config: bool = True) -> FitResult:
    if stage not in (1, 2):
        raise ConfigError(f"stage must be 1 or 2, got {stage}")
    if cfg.model.stage != stage:
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
        task = build_task(cfg, stage, announce)
        dataset = build_train_dataset(cfg, stage)
        announce(f"training data: {len(dataset)} samples per nominal epoch under {cfg.data.root}")
        trainer = Trainer(task, dataset, cfg.train, cfg.data, info, out_dir, config_yaml=to_yaml(cfg),
                          progress=progress)
        result = trainer.fit()
        announce(f"stage {stage}: {result.status} at step {result.step}; last checkpoint {result.checkpoint}")
        return result
    finally:
        cleanup_distributed()
