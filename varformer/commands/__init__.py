"""One module per ``varformer`` subcommand: ``add_arguments(parser)`` and ``run(args) -> int``.

Commands only parse arguments and call into the package; the logic lives in the package modules.
"""
from __future__ import annotations

import argparse
import sys


def add_old_spelling(parser: argparse.ArgumentParser, old: str, new: str, dest: str, takes_value: bool = True,
                     type=None) -> None:
    """Accept ``old``, a flag's earlier spelling, into ``dest`` (the new flag's), and say the new name once on
    stderr: one spelling per flag across subcommands (``-o/--output``, ``--batch-size``, ``--no-progress``,
    ``--weights``), the old ones kept working."""
    class OldSpelling(argparse.Action):
        def __call__(self, parser, namespace, values, option_string=None):
            print(f"{parser.prog}: {option_string} is now {new}", file=sys.stderr, flush=True)
            setattr(namespace, self.dest, values if takes_value else True)

    parser.add_argument(old, dest=dest, action=OldSpelling, nargs=None if takes_value else 0, type=type,
                        help=argparse.SUPPRESS, default=argparse.SUPPRESS)


def weights_help(default: str = "") -> str:
    """The --weights help of restore and evaluate, from the registry: every method's files and converters."""
    # imported here: the registry imports every method's model code; only the commands that take weights need it
    from varformer.methods import registry  # start-up
    converters = ", ".join(f"{c.name} ({spec.title})" for spec in registry.methods().values()
                           for c in spec.converters if not c.writes_folder)
    return ("a model file of any method here (" + ", ".join(registry.names()) + "; 'varformer convert NAME' makes "
            f"one from a release: {converters}), a training run's final_ema or ckpt_*.pt (EMA weights), or "
            "'identity' (the degraded input itself)" + (f"; default {default}" if default else ""))
