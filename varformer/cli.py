"""The ``varformer`` command line.

Each subcommand lives in ``varformer/commands/<name>.py`` and provides ``add_arguments(parser)`` and
``run(args) -> int``; this file only dispatches, and imports a subcommand (and torch) only when it runs, so
``varformer --help`` answers instantly.
"""
from __future__ import annotations

import argparse
import importlib
import sys
import warnings
from typing import List, Optional

from varformer.errors import VarformerError, worker_message

# name -> one-line help; the subcommand lives in varformer/commands/<name>.py
SUBCOMMANDS = {
    "demo": "build the offline demo benchmark, train a small model on it and print the results table",
    "evaluate": "evaluate a restorer on benchmarks (paper / full protocols, peer presets)",
    "compare": "put evaluation runs side by side on the same images: crops and per-image differences (HTML)",
    "restore": "restore images or folders of any size with seamless tiling",
    "train": "train stage 1 (Adapter) or stage 2 (restorer); torchrun-ready",
    "convert": "convert the official BasicSR checkpoint into this project's layout",
    "benchmark": "measure speed, FLOPs and memory of the backbone, the whole model or a training step",
    "data": "inspect benchmark folders: 'varformer data check ROOT'",
    "reproduce": "reproduce the paper: 'reproduce paper --root DATA' (main table), 'reproduce ablations [--small]'",
    "analyze": "the paper's analysis figures: 'analyze alignment|scale-replacement|dae-weights --weights W --root DATA'",
}


def _top_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="varformer",
        description="Image restoration with visual autoregressive (VAR) priors: train, evaluate, restore and "
                    "benchmark the registered methods.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="subcommands:\n" + "\n".join(f"  {k:<10} {v}" for k, v in SUBCOMMANDS.items())
        + "\n\n'varformer SUBCOMMAND --help' shows a subcommand's options.",
    )
    p.add_argument("command", choices=list(SUBCOMMANDS), metavar="SUBCOMMAND", help="one of: " + ", ".join(SUBCOMMANDS))
    p.add_argument("args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    from_command_line = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    top = _top_parser()
    if not argv:
        top.print_help()
        return 2
    ns = top.parse_args(argv[:1])
    name = ns.command
    module = importlib.import_module(f"varformer.commands.{name}")
    sub = argparse.ArgumentParser(prog=f"varformer {name}", description=SUBCOMMANDS[name])
    module.add_arguments(sub)
    args = _parse(sub, argv[1:])
    if from_command_line:
        # imported here: runtime imports torch, which `varformer --help` must not wait for (start-up)
        from varformer.runtime import keep_freed_memory
        keep_freed_memory()  # the process's own allocator setting: only for a real command, not a caller's process
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _one_line_warning(name)
            return int(module.run(args) or 0)
    except KeyboardInterrupt:
        print(f"varformer {name}: interrupted", file=sys.stderr)
        return 130
    except VarformerError as e:
        # an error raised in a DataLoader worker arrives with the worker's traceback as its message
        print(f"varformer {name}: error: {worker_message(str(e))}", file=sys.stderr)
        return 2


def _is_override(token: str) -> bool:
    return "=" in token and not token.startswith("-")


def _parse(parser: argparse.ArgumentParser, argv: List[str]) -> argparse.Namespace:
    """``parser.parse_args``, except that ``key=value`` overrides of a command that takes them may also follow
    its flags (``--no-progress train.lr=1e-4``): argparse leaves a positional list behind once an option came."""
    args, extra = parser.parse_known_args(argv)
    if extra:
        if hasattr(args, "overrides") and all(_is_override(t) for t in extra):
            args.overrides = list(args.overrides or []) + extra
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def _one_line_warning(name: str):
    """Warnings of the package (precision, resume, skipped files) as one line each, without a source line."""
    def show(message, category, filename, lineno, file=None, line=None):
        print(f"varformer {name}: warning: {message}", file=file or sys.stderr, flush=True)
    return show


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
