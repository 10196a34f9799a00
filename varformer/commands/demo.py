"""``varformer demo``: offline demo benchmark -> a short training run of a method's small demo model (or the model
files of any method found under checkpoints/) -> evaluation under the paper and full protocols -> table and report
page. ``--method NAME`` picks the method (any registered one with a demo recipe; default: the package's own);
``--model`` is its old spelling."""
from __future__ import annotations

import argparse
import os
import sys
import time

from varformer.commands import add_old_spelling
from varformer.errors import ConfigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # imported here: the registry imports every method's model code, which `varformer --help` must not wait for
    # (start-up time); `varformer demo --help` lists the methods it finds
    from varformer.methods import registry
    with_demo = [name for name, spec in registry.methods().items() if spec.demo is not None]
    parser.add_argument("--demo-cache", default=None,
                        help="demo set folder (default: $XDG_CACHE_HOME/varformer/demo or ~/.cache/varformer/demo)")
    add_old_spelling(parser, "--output-dir", "-o/--output", "output")
    parser.add_argument("-o", "--output", default=None,
                        help="write the evaluations (per-image CSV, summary JSON, tables, report.html) and the demo's "
                             "page demo.html here (refused if it has results); default: the training run's folder")
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_old_spelling(parser, "--quiet", "--no-progress", "no_progress", takes_value=False)
    parser.add_argument("--method", choices=with_demo, default=None,
                        help=f"whose small demo model to train (default {registry.DEFAULT}): its demo recipe's configs, "
                             "stage after stage (docs/demo.md); with it, only that method's weights under "
                             "checkpoints/ are looked for")
    add_old_spelling(parser, "--model", "--method", "method")
    parser.add_argument("--steps", type=int, nargs="+", default=None, metavar="N",
                        help="optimiser steps, one number per stage of the method's demo recipe (default: each "
                             "config's train.total_iters, e.g. configs/demo_stage{1,2}.yaml); seeded, so the same "
                             "table on every machine")
    parser.add_argument("--train-minutes", type=float, default=None,
                        help="train for a wall-clock budget instead of a number of steps, split over the stages as "
                             "the recipe says: the table then depends on the machine's speed")
    parser.add_argument("--train", action="store_true",
                        help="train the small demo model even when weights are present under checkpoints/")
    parser.add_argument("--baseline-only", action="store_true",
                        help="evaluate only the identity baseline (no training, no weights): a quick check")
    parser.add_argument("--run-dir", default=None,
                        help="where the training runs write checkpoints and TensorBoard logs (default runs/demo-TIME)")


def _check_lengths(args) -> None:
    if args.train_minutes is not None and args.train_minutes <= 0:
        raise ConfigError("--train-minutes must be > 0")
    if args.steps is not None and min(args.steps) < 1:
        raise ConfigError("--steps takes numbers >= 1, one per stage")
    if args.steps is not None and args.train_minutes is not None:
        raise ConfigError("--steps and --train-minutes are two ways to say how long to train: give one")


def run(args: argparse.Namespace) -> int:
    # imported when the command runs, not at module level: keeps `varformer --help` start-up instant
    from varformer.demo import (DemoTraining, find_trained_weights, pretrained_restorers, run_demo,  # start-up
                                untrained_demo, write_demo_report)
    from varformer.demo.run import demo_benches  # start-up
    from varformer.methods import registry  # start-up
    _check_lengths(args)
    spec = registry.get(args.method or registry.DEFAULT)
    weights = [] if args.train or args.baseline_only else find_trained_weights("checkpoints", args.method)
    training, report_dir, notes = None, args.output, []
    if args.baseline_only:
        steps = []
    elif weights:
        print(f"evaluating the weights found under checkpoints/ instead of training: {', '.join(weights)}")
        steps = pretrained_restorers(weights, args.device)
    elif spec.demo is not None and not spec.demo.stages:  # a method with no training stage: its untrained model
        steps, notes = [untrained_demo(spec, args.device)], [spec.demo.summary]
    else:
        run_dir = args.run_dir or os.path.join("runs", time.strftime(f"demo-{spec.name}-%Y%m%d-%H%M%S"))
        seconds = None if args.train_minutes is None else args.train_minutes * 60
        training = DemoTraining(spec, run_dir, args.device, steps=args.steps, seconds=seconds)
        steps, notes = [training], [spec.demo.summary]
        report_dir = report_dir or os.path.join(run_dir, "report")
    outcome = run_demo(args.demo_cache, report_dir, args.overwrite, args.device, train_steps=steps,
                       progress=not args.no_progress)
    print(f"demo set: {outcome.demo_dir} (ready in {outcome.build_seconds:.1f} s)")
    print(outcome.table)
    if not steps:
        print("varformer demo --baseline-only: no model was trained or evaluated; the table shows only the identity "
              "baseline (the degraded inputs scored against the targets).", file=sys.stderr)
    elif len(outcome.restorers) == 1:
        print("none of the weights found under checkpoints/ runs as a restorer here (see above); --train trains the "
              "small demo model instead", file=sys.stderr)
    if report_dir is not None:
        stages = [(r.stage, r.config_file, r.result.history) for r in training.runs] if training else []
        title = f"varformer demo: {spec.title}" if training else "varformer demo"
        page = write_demo_report(report_dir, title, outcome.table, outcome.restorers, outcome.demo_dir,
                                 [name for name, _ in demo_benches(outcome.demo_dir)], stages,
                                 outcome.output_dirs, notes)
        print(f"report (table, before/after images, loss curves): {page}")
    for note in notes:
        print(note)
    return 0
