"""``varformer convert NAME SOURCE -o OUT``: a released file (or one of ours) into another layout.

The converters are the methods' (``MethodSpec.converters``: e.g. ``official`` for VarFormer's BasicSR checkpoint,
``restorevar`` and ``restorevar-to-official`` for RestoreVAR's); ``varformer convert --help`` lists those of every
installed method. A file that needs no conversion (a model file or training checkpoint of this project, a backbone
file) is refused in one line that says what to do with it instead.
"""
from __future__ import annotations

import argparse
import os


def _converters():
    # imported here: the registry imports every method's model code (start-up time of `varformer --help`)
    from varformer.methods import registry
    return {c.name: (spec, c) for spec in registry.methods().values() for c in spec.converters}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    subs = parser.add_subparsers(dest="converter", metavar="NAME", required=True)
    for name, (spec, conv) in _converters().items():
        p = subs.add_parser(name, help=f"{spec.title}: {conv.help}", description=f"{spec.title}: {conv.help}")
        p.add_argument("checkpoint", metavar="SOURCE", help="the file to convert")
        p.add_argument("-o", "--output", required=True,
                       help="the output folder" if conv.writes_folder else
                       "the output file (.safetensors or a torch file)")
        conv.add_arguments(p)


NO_CONVERSION = {
    "model": "it needs no conversion: pass it to 'varformer restore --weights' or 'varformer evaluate --weights'",
    "training": "it needs no conversion: restore and evaluate take it directly (its EMA weights), or use its run's "
                "final_ema.pt",
    "backbone": "it needs no conversion: training reads it from its config's path (or from checkpoints/)",
}


def refuse_what_needs_no_conversion(path: str, spec, converter) -> None:
    """One line for a file the converter does not take: what it is and what to do with it."""
    # start-up: imported when the command runs
    from varformer.errors import CheckpointMismatchError
    from varformer.methods import registry  # start-up
    if not os.path.isfile(path):
        return  # the converter says where to download the released file
    info = registry.inspect_weights(path)
    if info.kind == "official" and info.method is spec:
        return
    if converter.writes_folder and info.kind == "model" and info.method is spec:
        return  # ours -> the official layout
    what = NO_CONVERSION.get(info.kind, f"'convert {converter.name}' takes {converter.help.split(' -> ')[0]}")
    raise CheckpointMismatchError(f"{path} is {info.describe()}; {what}")


def run(args: argparse.Namespace) -> int:
    spec, converter = _converters()[args.converter]
    refuse_what_needs_no_conversion(args.checkpoint, spec, converter)
    for line in converter.run(args):
        print(line)
    return 0
