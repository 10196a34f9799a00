"""``varformer convert NAME SOURCE -o OUT``: a released file (or one of ours) into another layout.

The converters are the methods' (``MethodSpec.converters``: e.g. ``official`` for VarFormer's BasicSR checkpoint,
``restorevar`` and ``restorevar-to-official`` for RestoreVAR's); ``varformer convert --help`` lists those of every
installed method. A file that needs no conversion (a model file or training checkpoint of this project, a backbone
file) is refused in one line that says what to do with it instead.

Before a converter runs, its outputs are checked here, for every converter alike (docs/safety.md): an output is
never one of the inputs (``X -o X``: the source would be read while it is replaced), never a folder where a file
is meant (or a file where a folder is meant), and an existing file -- whatever it is -- is replaced only with
``--overwrite``. Each file is then written to a temporary beside it and renamed.
"""
from __future__ import annotations

import argparse
import os
from typing import List


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
        p.add_argument("--overwrite", action="store_true",
                       help="replace output files that already exist (refused otherwise)")
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


def _inputs(args: argparse.Namespace) -> List[str]:
    """Every argument that names an existing file (the source, and options such as --vae)."""
    values = [v for k, v in vars(args).items() if k not in ("output", "converter")]
    flat = [x for v in values for x in (v if isinstance(v, (list, tuple)) else [v])]
    return [x for x in flat if isinstance(x, str) and os.path.isfile(x)]


def _what_it_is(path: str) -> str:
    from varformer.errors import VarformerError  # start-up: imported when the command runs
    from varformer.methods import registry  # start-up: the registry imports every method's model code
    try:
        return registry.inspect_weights(path).describe()
    except VarformerError:
        return "not a weights file"


def check_outputs(args: argparse.Namespace, converter) -> List[str]:
    """The converter's outputs checked before it reads anything (module doc); returns notes."""
    from varformer.errors import OutputError  # start-up: imported when the command runs
    from varformer.files import check_output_file, check_writable_folder, folder_entries
    inputs = _inputs(args)
    if not converter.writes_folder:
        note = check_output_file(args.output, inputs, args.overwrite, "-o", describe=_what_it_is)
        return [note] if note else []
    if os.path.isfile(args.output):
        raise OutputError(f"-o {args.output} is a file; 'convert {converter.name}' writes several files into a "
                          f"folder: give a folder")
    check_writable_folder(args.output, "-o")
    if not converter.folder_files:  # names unknown before it runs: only a new or empty folder, or --overwrite
        if folder_entries(args.output) and not args.overwrite:
            raise OutputError(f"-o {args.output} is not empty; 'convert {converter.name}' would write into it: "
                              f"pass --overwrite, or give a new or empty folder")
        return []
    notes = []
    for name in converter.folder_files:
        note = check_output_file(os.path.join(args.output, name), inputs, args.overwrite, "-o",
                                 describe=_what_it_is)
        notes += [note] if note else []
    return notes


def run(args: argparse.Namespace) -> int:
    spec, converter = _converters()[args.converter]
    refuse_what_needs_no_conversion(args.checkpoint, spec, converter)
    notes = check_outputs(args, converter)
    lines = converter.run(args)
    for line in notes + list(lines):
        print(line)
    return 0
