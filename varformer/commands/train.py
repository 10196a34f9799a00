"""``varformer train stage1|stage2|decoder --config FILE [key=value ...]`` (also under ``torchrun -m varformer``);
the config's ``model.method`` says which method (VarFormer or RestoreVAR) the stage belongs to."""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("stage", choices=["stage1", "stage2", "decoder"],
                        help="VarFormer: stage1 Adapter, stage2 the restorer; RestoreVAR (model.method=restorevar): "
                             "stage1 the transformer, stage2 the refiner, decoder the VQVAE decoder fine-tuning "
                             "(not the authors' code)")
    # the overrides may follow the config file (``--config FILE k=v ...``) or precede it; argparse cannot put a
    # variable-length positional after an option, so the option takes the file and what follows it
    parser.add_argument("--config", required=True, nargs="+", metavar=("FILE", "key=value"),
                        help="YAML recipe, e.g. configs/stage1.yaml, then optional overrides such as "
                             "train.output_dir=runs/s2 data.batch_size=8")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help=argparse.SUPPRESS)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (log lines only)")


def run(args) -> int:
    # imported when the command runs, not at module level: keeps `varformer --help` start-up instant
    from varformer.config import load_config
    from varformer.training.run import STAGES, run_training
    cfg = load_config(args.config[0], [*args.overrides, *args.config[1:]])
    result = run_training(STAGES[args.stage], cfg, progress=not args.no_progress)
    return 130 if result.status == "interrupted" else 0
