"""``varformer reproduce paper|ablations``: the paper's main table from the released weights, and its ablation
table (full size on GPUs, or ``--small`` on the demo set on a CPU). README "Reproducing the paper"."""
from __future__ import annotations

import argparse
import shlex
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="what", required=True, metavar="{paper,ablations}")
    p = sub.add_parser("paper", help="fetch + convert the released weights, evaluate the benchmarks of the paper's "
                                     "main table, print it with the published rows and our deltas")
    p.add_argument("--root", required=True, help="folder holding the test sets (Rain100H/L, Test100/1200/2800, "
                                                 "GoPro, LOL, SOTS outdoor; `varformer data check ROOT`)")
    p.add_argument("--protocol", nargs="+", default=["paper"], help="paper (default) and/or full, or a preset")
    p.add_argument("--output-dir", "-o", default="outputs/reproduce", help="tables, per-image CSVs, summaries")
    p.add_argument("--offline", action="store_true",
                   help="never download: checkpoints/ and the Hugging Face cache only (local_files_only)")
    p.add_argument("--checkpoints-dir", default=None, help="folder searched before the hub (default: checkpoints/)")
    p.add_argument("--cache-dir", default=None,
                   help="where converted checkpoints go (default: ~/.cache/varformer/converted)")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--workers", type=int, default=2, help="image-loading processes")
    p.add_argument("--overwrite", action="store_true", help="replace results already in the output folder")
    p.add_argument("--quiet", action="store_true", help="no progress bars")

    a = sub.add_parser("ablations", help="train and evaluate every row of the paper's ablation table")
    a.add_argument("--small", action="store_true",
                   help="every row on the demo set with the small demo recipes (CPU, minutes)")
    a.add_argument("--rows", nargs="+", default=None, help="baseline fixed dae aft full (default: all)")
    a.add_argument("--output-dir", "-o", default=None,
                   help="runs and tables (default runs/ablations, or runs/ablations-small with --small)")
    a.add_argument("--device", default="auto")
    a.add_argument("--steps", type=int, default=40, help="--small: stage-2 steps per row (default 40)")
    a.add_argument("--stage1-steps", type=int, default=20, help="--small: steps of the shared stage-1 run")
    a.add_argument("--demo-cache", default=None, help="--small: demo set folder")
    a.add_argument("--train-root", default=None, help="full size: stage-2 training data (official layouts)")
    a.add_argument("--root", default=None, help="full size: test sets (the Rain13K test sets are evaluated)")
    a.add_argument("--stage1-weights", default=None, help="full size: a stage-1 model every prior row starts from")
    a.add_argument("--stage1-root", default=None, help="full size: clean images to train stage 1 first (DF2K HR)")
    a.add_argument("--dry-run", action="store_true",
                   help="full size: print the training commands (e.g. to run them under torchrun) and stop")
    a.add_argument("--quiet", action="store_true", help="no progress bars")
    a.add_argument("overrides", nargs="*", metavar="key=value", help="full size: config overrides for every run")


def _paper(args) -> int:
    # imported when the command runs, not at module level: keeps `varformer --help` start-up instant
    from varformer.reproduce import reproduce_paper
    outcome = reproduce_paper(args.root, args.protocol, args.output_dir, offline=args.offline,
                              checkpoints_dir=args.checkpoints_dir, cache_dir=args.cache_dir, device=args.device,
                              precision=args.precision, batch_size=args.batch_size, workers=args.workers,
                              overwrite=args.overwrite, progress=not args.quiet)
    print(outcome.table)
    print(f"tables and per-image results: {outcome.output_dir}")
    return 0


def _ablations(args) -> int:
    # imported when the command runs, not at module level: keeps `varformer --help` start-up instant
    from varformer.errors import ConfigError
    from varformer.reproduce.ablations import plan_full_ablations, run_full_ablations, run_small_ablations
    if args.small:
        if args.overrides or args.train_root or args.root:
            raise ConfigError("--small runs the demo recipes on the demo set: no data roots or overrides")
        outcome = run_small_ablations(args.output_dir or "runs/ablations-small", args.rows, args.stage1_steps,
                                      args.steps, args.device, args.demo_cache, progress=not args.quiet)
    else:
        if not args.train_root or not (args.root or args.dry_run):
            raise ConfigError("full-size ablations need --train-root (stage-2 training data) and --root (test "
                              "sets); or --small for the demo set")
        out = args.output_dir or "runs/ablations"
        if args.dry_run:
            for stage, recipe, *rest in plan_full_ablations(args.train_root, args.stage1_weights, args.stage1_root,
                                                            out, args.rows, args.overrides):
                print(shlex.join(["varformer", "train", stage, "--config", recipe, *rest]))
            return 0
        outcome = run_full_ablations(args.train_root, args.root, out, args.stage1_weights, args.stage1_root,
                                     args.rows, args.overrides, args.device, progress=not args.quiet)
    print(outcome.table)
    print(f"runs and tables: {outcome.output_dir}", file=sys.stderr)
    return 0


def run(args: argparse.Namespace) -> int:
    return _paper(args) if args.what == "paper" else _ablations(args)
