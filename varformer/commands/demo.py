"""``varformer demo``: offline demo benchmark -> evaluation under the paper and full protocols -> table."""
from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--demo-cache", default=None,
                        help="demo set folder (default: $XDG_CACHE_HOME/varformer/demo or ~/.cache/varformer/demo)")
    parser.add_argument("--output-dir", "-o", default=None,
                        help="also write per-image CSV, summary JSON and tables here (refused if it has results)")
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from varformer.demo import NOT_TRAINED_MESSAGE, run_demo
    outcome = run_demo(args.demo_cache, args.output_dir, args.overwrite, args.device, progress=not args.quiet)
    print(f"demo set: {outcome.demo_dir} (ready in {outcome.build_seconds:.1f} s)")
    print(outcome.table)
    if not outcome.trained:
        print(NOT_TRAINED_MESSAGE, file=sys.stderr)
        return 3
    return 0
