"""``varformer analyze NAME --weights W --root DATA``: a method's paper analysis figures (``MethodSpec.analyses``),
each a PNG and CSV files in the output folder (docs/analysis.md). The weights say which method's analysis runs;
optional modules (matplotlib, scikit-learn) are checked before any compute, one line each when missing."""
from __future__ import annotations

import argparse
import os

from varformer.commands import add_old_spelling


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights", required=True,
                        help="a method's weights (a model file of ours, or a release its method reads, e.g. the "
                             "official net_g_last.pth); its method provides the analysis")
    parser.add_argument("--root", required=True, help="benchmark folder, or 'demo' for the built-in demo set")
    parser.add_argument("--benchmarks", nargs="+", default=None,
                        help="benchmarks to draw from (default: the demo sets, or those found of rain100h, rain100l, "
                             "test100, sots-outdoor, gopro, lol, cbsd68-s25, sidd-val)")
    parser.add_argument("--max-images", type=int, default=8, help="images per task (default 8)")
    parser.add_argument("-o", "--output", dest="output_dir", default="outputs/analysis")
    add_old_spelling(parser, "--output-dir", "-o/--output", "output_dir")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=4)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # imported here: the registry imports every method's model code, which `varformer --help` must not wait for
    # (start-up time); `varformer analyze --help` lists the analyses it finds
    from varformer.methods import registry
    sub = parser.add_subparsers(dest="analysis", required=True, metavar="ANALYSIS")
    seen = set()
    for spec in registry.methods().values():
        for a in spec.analyses:
            if a.name in seen:   # the same name in two methods: the weights pick the method at run time
                continue
            seen.add(a.name)
            p = sub.add_parser(a.name, help=f"{a.help} ({spec.title}: {a.figure})")
            _common(p)
            a.add_arguments(p)


def run(args: argparse.Namespace) -> int:
    # imported when the command runs, not at module level: keeps `varformer --help` start-up instant
    from varformer.errors import CheckpointMismatchError, WeightsNotFoundError  # start-up
    from varformer.methods import registry  # start-up
    from varformer.methods.figures import available, missing_line  # start-up

    if not os.path.isfile(args.weights):
        raise WeightsNotFoundError(f"weights file not found: {args.weights}; {registry.get(registry.DEFAULT).release}")
    info = registry.inspect_weights(args.weights)
    if info.method is None:
        raise CheckpointMismatchError(f"{args.weights} is {info.describe()}; an analysis needs the weights of a "
                                      f"method ({', '.join(registry.names())})")
    analysis = info.method.analysis(args.analysis)
    for module, consequence in analysis.optional:   # before any compute: one line, not a traceback at the end
        if not available(module):
            print(f"note: {missing_line(module, consequence)}", flush=True)
    print("\n".join(analysis.run(args, info)))
    return 0
