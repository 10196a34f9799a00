"""``varformer train stage1|stage2 --config FILE [key=value ...]`` (also under ``torchrun -m varformer``)."""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("stage", choices=["stage1", "stage2"], help="stage1: Adapter; stage2: the restorer")
    parser.add_argument("--config", required=True, help="YAML recipe, e.g. configs/stage1.yaml")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="config overrides, e.g. train.output_dir=runs/s2 data.batch_size=8")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (log lines only)")


def run(args) -> int:
    from varformer.config import load_config
    from varformer.training.run import STAGES, run_training
    cfg = load_config(args.config, args.overrides)
    result = run_training(STAGES[args.stage], cfg, progress=not args.no_progress)
    return 130 if result.status == "interrupted" else 0
