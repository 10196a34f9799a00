"""``varformer train STAGE --config FILE [key=value ...]`` (also under ``torchrun -m varformer``): the config's
``method`` says which method the stage belongs to; each method's stages are its ``MethodSpec.stages``."""
from __future__ import annotations

import argparse
import os


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # imported here: the registry imports every method's model code, which `varformer --help` must not wait for
    # (start-up time); `varformer train --help` lists the stages it finds
    from varformer.methods import registry
    stages = "; ".join(f"{spec.title} (method: {spec.name}): " + ", ".join(f"{s.name} {s.description}"
                                                                         for s in spec.stages)
                       for spec in registry.methods().values())
    parser.add_argument("stage", choices=registry.stage_names(), help=f"the config's method's stage: {stages}")
    # the overrides may follow the config file (``--config FILE k=v ...``) or precede it; argparse cannot put a
    # variable-length positional after an option, so the option takes the file and what follows it
    parser.add_argument("--config", required=True, nargs="+", metavar=("FILE", "key=value"),
                        help="YAML recipe, e.g. configs/stage1.yaml, then optional overrides such as "
                             "train.output_dir=runs/s2 data.batch_size=8")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help=argparse.SUPPRESS)
    parser.add_argument("--dry-run", action="store_true",
                        help="check the config, data, validation set, weight files and output folder, print the "
                             "plan (batch, steps, schedule, precision, memory per device) and stop")
    parser.add_argument("--world-size", type=int, default=None, metavar="N",
                        help="with --dry-run: plan for N processes (default: $WORLD_SIZE as torchrun sets it, else 1)")
    parser.add_argument("--no-memory", action="store_true",
                        help="with --dry-run: skip the memory estimate (tens of seconds on a CPU at full size)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a previous run in train.output_dir (its checkpoints, config.yaml, final_ema.pt "
                             "and tb/) instead of refusing the folder")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (log lines only)")


def _overrides(args) -> list:
    """The overrides before and after the flags (``--config FILE k=v``, ``k=v --config FILE``, and after any flag:
    varformer.cli), one value per key whatever the order."""
    from varformer.errors import ConfigError  # start-up: the error class only when the command runs
    overrides = [*args.overrides, *args.config[1:]]
    given = {}
    for item in overrides:
        key = item.split("=", 1)[0]
        if given.setdefault(key, item) != item:
            raise ConfigError(f"{key} is given twice ({given[key]}, {item}): give it once")
    return overrides


def run(args) -> int:
    # imported when the command runs, not at module level: keeps `varformer --help` start-up instant
    from varformer.config import load_config
    from varformer.training.run import run_training  # start-up
    cfg = load_config(args.config[0], _overrides(args))
    if args.world_size is not None and not args.dry_run:
        from varformer.errors import ConfigError  # start-up: the error class only on this path
        raise ConfigError("--world-size only plans a dry run; a real run's world size is torchrun's --nproc_per_node")
    if args.dry_run:
        from varformer.training.plan import plan_run  # start-up: only a dry run needs the planner
        world = args.world_size or int(os.environ.get("WORLD_SIZE", "1"))
        if int(os.environ.get("RANK", "0")) == 0:
            log = lambda m: print(m, flush=True)  # noqa: E731
            print("\n".join(plan_run(args.stage, cfg, world, args.overwrite, not args.no_memory, log)))
        return 0
    result = run_training(args.stage, cfg, progress=not args.no_progress, overwrite=args.overwrite)
    return 130 if result.status == "interrupted" else 0
