"""``varformer reproduce paper|ablations [--method NAME]``: a method's paper main table from its released weights,
and its ablation table (full size on GPUs, or ``--small`` on the demo set on a CPU), through the method's
``MethodSpec.paper`` / ``MethodSpec.ablations``. README "Reproducing the paper"."""
from __future__ import annotations

import argparse
import shlex
import sys

from varformer.commands import add_old_spelling

PROGRAM = __name__.split(".")[0]     # the command-line program is named after the package


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="what", required=True, metavar="{paper,ablations}")
    p = sub.add_parser("paper", help="fetch + convert a method's released weights, evaluate the benchmarks of its "
                                     "paper's main table, print it with the published rows and our deltas")
    p.add_argument("--method", default=None, help="whose paper (default: the registry's default method)")
    p.add_argument("--root", required=True, help="folder holding the test sets of the method's table "
                                                 "(`varformer data check ROOT` shows what is recognised)")
    p.add_argument("--protocol", nargs="+", default=None,
                   help="the method's paper protocol(s) (default: its first; e.g. paper and/or full)")
    p.add_argument("-o", "--output", default="outputs/reproduce", help="tables, per-image CSVs, summaries")
    add_old_spelling(p, "--output-dir", "-o/--output", "output")
    p.add_argument("--offline", action="store_true",
                   help="never download: checkpoints/ and the Hugging Face cache only (local_files_only)")
    p.add_argument("--checkpoints-dir", default=None, help="folder searched before the hub (default: checkpoints/)")
    p.add_argument("--cache-dir", default=None,
                   help="where converted model files go (default: ~/.cache/varformer/converted)")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default=None, choices=["fp32", "bf16"],
                   help="default: each protocol's recorded precision (the papers' evaluations: fp32), else fp32")
    p.add_argument("--max-images", type=int, default=None, metavar="N",
                   help="only the first N images of each set: a quick, clearly labelled partial table (no Δ)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--workers", type=int, default=2, help="image-loading processes")
    p.add_argument("--overwrite", action="store_true", help="replace results already in the output folder")
    p.add_argument("--dry-run", action="store_true",
                   help="check the data, the released files, the cache and the output folder, print the plan and "
                        "stop (nothing downloaded, converted, evaluated or written)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_old_spelling(p, "--quiet", "--no-progress", "no_progress", takes_value=False)

    a = sub.add_parser("ablations", help="train and evaluate every row of a method's ablation table")
    a.add_argument("--method", default=None, help="whose ablations (default: the registry's default method)")
    a.add_argument("--small", action="store_true",
                   help="every row on the demo set with the small demo recipes (CPU, minutes)")
    a.add_argument("--rows", nargs="+", default=None, help="row names (default: all; --dry-run lists them)")
    add_old_spelling(a, "--output-dir", "-o/--output", "output")
    a.add_argument("-o", "--output", default=None,
                   help="runs and tables (default runs/ablations, or runs/ablations-small with --small)")
    a.add_argument("--device", default="auto")
    a.add_argument("--steps", type=int, default=40, help="--small: steps per row (default 40)")
    a.add_argument("--stage1-steps", type=int, default=20, help="--small: steps of the shared first-stage run")
    a.add_argument("--demo-cache", default=None, help="--small: demo set folder")
    a.add_argument("--train-root", default=None, help="full size: the rows' training data (official layouts)")
    a.add_argument("--root", default=None, help="full size: test sets (the method's ablation sets are evaluated)")
    a.add_argument("--stage1-weights", default=None, help="full size: the first-stage model every row starts from")
    a.add_argument("--stage1-root", default=None, help="full size: images to train the first stage on first")
    a.add_argument("--dry-run", action="store_true",
                   help="print what would run and stop, training nothing (full size: the training commands, e.g. "
                        "to run them under torchrun)")
    a.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_old_spelling(a, "--quiet", "--no-progress", "no_progress", takes_value=False)
    a.add_argument("overrides", nargs="*", metavar="key=value", help="full size: config overrides for every run")


def _paper(args) -> int:
    # imported when the command runs, not at module level: keeps `varformer --help` start-up instant
    from varformer.reproduce import plan_paper, reproduce_paper
    common = dict(method=args.method, protocols=args.protocol, output_dir=args.output, offline=args.offline,
                  checkpoints_dir=args.checkpoints_dir, cache_dir=args.cache_dir, precision=args.precision,
                  overwrite=args.overwrite, max_images=args.max_images)
    if args.dry_run:
        print("\n".join(plan_paper(args.root, **common)))
        return 0
    outcome = reproduce_paper(args.root, device=args.device, batch_size=args.batch_size, workers=args.workers,
                              progress=not args.no_progress, **common)
    print(outcome.table)
    print(f"tables and per-image results: {outcome.output_dir}")
    return 0


def _ablations(args) -> int:
    # imported when the command runs, not at module level: keeps `varformer --help` start-up instant
    from varformer.errors import ConfigError  # start-up
    # start-up: the training and evaluation code only when the command runs
    from varformer.reproduce.ablations import (ablation_spec, plan_full_ablations, plan_small, run_full_ablations,
                                               run_small_ablations)
    if args.small:
        if args.overrides or args.train_root or args.root:
            raise ConfigError("--small runs the demo recipes on the demo set: no data roots or overrides")
        out = args.output or "runs/ablations-small"
        if args.dry_run:
            print("\n".join(plan_small(ablation_spec(args.method), out, args.rows, args.stage1_steps, args.steps,
                                       args.demo_cache)))
            return 0
        outcome = run_small_ablations(out, args.rows, args.stage1_steps, args.steps, args.device, args.demo_cache,
                                      progress=not args.no_progress, method=args.method)
    else:
        if not args.train_root or not (args.root or args.dry_run):
            raise ConfigError("full-size ablations need --train-root (the rows' training data) and --root (test "
                              "sets); or --small for the demo set")
        out = args.output or "runs/ablations"
        if args.dry_run:
            for stage, recipe, *rest in plan_full_ablations(args.train_root, args.stage1_weights, args.stage1_root,
                                                            out, args.rows, args.overrides, args.method):
                print(shlex.join([PROGRAM, "train", stage, "--config", recipe, *rest]))
            return 0
        outcome = run_full_ablations(args.train_root, args.root, out, args.stage1_weights, args.stage1_root,
                                     args.rows, args.overrides, args.device, progress=not args.no_progress,
                                     method=args.method)
    print(outcome.table)
    print(f"runs and tables: {outcome.output_dir}", file=sys.stderr)
    return 0


def run(args: argparse.Namespace) -> int:
    return _paper(args) if args.what == "paper" else _ablations(args)
