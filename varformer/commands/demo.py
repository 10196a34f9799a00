"""``varformer demo``: offline demo benchmark -> a short training run of a small model (or the official/user
weights found under checkpoints/) -> evaluation under the paper and full protocols -> table. ``--model
restorevar`` trains a small RestoreVAR instead (both stages)."""
from __future__ import annotations

import argparse
import os
import sys
import time


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--demo-cache", default=None,
                        help="demo set folder (default: $XDG_CACHE_HOME/varformer/demo or ~/.cache/varformer/demo)")
    parser.add_argument("--output-dir", "-o", default=None,
                        help="also write per-image CSV, summary JSON and tables here (refused if it has results)")
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--steps", type=int, nargs=2, default=None, metavar=("STAGE1", "STAGE2"),
                        help="optimiser steps of the two training stages (default: the recipes' train.total_iters, "
                             "configs/demo_stage{1,2}.yaml); seeded, so the same table on every machine")
    parser.add_argument("--train-minutes", type=float, default=None,
                        help="train for a wall-clock budget instead of a number of steps (1/6 for stage 1, 5/6 for "
                             "stage 2): the table then depends on the machine's speed")
    parser.add_argument("--model", choices=["varformer", "restorevar"], default="varformer",
                        help="which small model to train (restorevar: the transformer, then the refiner, for the steps "
                             "of configs/demo_restorevar_stage{1,2}.yaml, or --steps / --train-minutes (1/3, 2/3); "
                             "weights under checkpoints/ are not looked for)")
    parser.add_argument("--train", action="store_true",
                        help="train the small demo model even when weights are present under checkpoints/")
    parser.add_argument("--baseline-only", action="store_true",
                        help="evaluate only the identity baseline (no training, no weights): a quick check")
    parser.add_argument("--run-dir", default=None,
                        help="where the training runs write checkpoints and TensorBoard logs (default runs/demo-TIME)")


def run(args: argparse.Namespace) -> int:
    # imported when the command runs, not at module level: keeps `varformer --help` start-up instant
    from varformer.demo import (find_trained_weights, pretrained_restorers, restorevar_training_step, run_demo,
                                training_step)
    from varformer.errors import ConfigError  # start-up
    weights = [] if args.train or args.model == "restorevar" else find_trained_weights("checkpoints")
    if args.train_minutes is not None and args.train_minutes <= 0:
        raise ConfigError("--train-minutes must be > 0")
    if args.steps is not None and min(args.steps) < 1:
        raise ConfigError("--steps takes two numbers >= 1 (stage 1, stage 2)")
    if args.steps is not None and args.train_minutes is not None:
        raise ConfigError("--steps and --train-minutes are two ways to say how long to train: give one")
    if args.baseline_only:
        steps, grid = [], None
    elif args.model == "restorevar":
        run_dir = args.run_dir or os.path.join("runs", time.strftime("demo-restorevar-%Y%m%d-%H%M%S"))
        seconds = None if args.train_minutes is None else (args.train_minutes * 20, args.train_minutes * 40)
        steps, grid = [restorevar_training_step(run_dir, args.device, steps=args.steps, seconds=seconds)], None
    elif weights:
        print(f"evaluating the weights found under checkpoints/ instead of training: {', '.join(weights)}")
        steps = pretrained_restorers(weights, args.device)
        grid = None
    else:
        run_dir = args.run_dir or os.path.join("runs", time.strftime("demo-%Y%m%d-%H%M%S"))
        grid = os.path.join(args.output_dir or run_dir, "demo_grid.png")
        seconds = None if args.train_minutes is None else (args.train_minutes * 10, args.train_minutes * 50)
        steps = [training_step(run_dir, args.device, steps=args.steps, seconds=seconds, grid_path=grid)]
    outcome = run_demo(args.demo_cache, args.output_dir, args.overwrite, args.device, train_steps=steps,
                       progress=not args.quiet)
    print(f"demo set: {outcome.demo_dir} (ready in {outcome.build_seconds:.1f} s)")
    print(outcome.table)
    if not steps:
        print("varformer demo --baseline-only: no model was trained or evaluated; the table shows only the identity "
              "baseline (the degraded inputs scored against the targets).", file=sys.stderr)
    if grid:
        print(f"side-by-side grid: {grid}")
        print("The demo model is small (width 32, VAR depth 2) on a random-init VAR backbone and trains for minutes "
              "on the demo photos: it shows the pipeline working end to end, not the paper's numbers.")
    if args.model == "restorevar" and steps:
        print("The demo RestoreVAR is small (VQVAE width 32, VAR depth 2, 128x128 inputs) on a random-init VQVAE and "
              "VAR: its decoder never saw an image, so its outputs show the pipeline running, not restoration.")
    return 0
