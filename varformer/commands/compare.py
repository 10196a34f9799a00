"""``varformer compare RUN_A RUN_B ...``: evaluation runs side by side on the same images (``compare.html``)."""
from __future__ import annotations

import argparse

from varformer.commands import add_old_spelling


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs", nargs="+", metavar="RUN",
                   help="output folders of 'varformer evaluate' (one protocol each: e.g. outputs/eval/paper); the "
                        "first is the reference A, differences are run - A")
    add_old_spelling(p, "--output-dir", "-o/--output", "output")
    p.add_argument("-o", "--output", default="outputs/compare",
                   help="folder for compare.html (default: outputs/compare)")
    p.add_argument("--labels", nargs="+", default=None, metavar="NAME",
                   help="one name per run (default: the restorer's name, with the folder where names repeat)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a compare.html in the output folder that 'varformer compare' did not write")


def run(args: argparse.Namespace) -> int:
    # imported when the command runs, not at module level: keeps `varformer --help` start-up instant
    from varformer.evaluation.compare import compare_runs

    result = compare_runs(args.runs, args.output, labels=args.labels, overwrite=args.overwrite)
    print(result.text)
    print(f"{result.n_common} common images compared; written to {result.path}")
    return 0
