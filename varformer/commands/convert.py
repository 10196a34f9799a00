"""``varformer convert official CKPT -o OUT [--key params]``: the released BasicSR checkpoint -> our format.

The layout (stage, VAR depth, VQVAE width, cross-attention blocks, dec_adjust) is inferred from the tensors; every
tensor is mapped with a shape check or reported as inert and dropped; anything else stops the conversion.
"""
from __future__ import annotations

import argparse
import os


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", choices=["official"], help="checkpoint flavour to convert from")
    parser.add_argument("checkpoint", help="official checkpoint (e.g. net_g_last.pth from wsy541/VarFormer)")
    parser.add_argument("-o", "--output", required=True,
                        help="output file: .safetensors (config in the metadata) or a torch file (.pt/.pth)")
    parser.add_argument("--key", default=None,
                        help="entry of the BasicSR checkpoint to convert (default params_ema; or params)")
    parser.add_argument("--cfg", type=float, default=0.5, help="CFG strength stored in the config (default 0.5)")


def run(args: argparse.Namespace) -> int:
    # imported when the command runs, not at module level: keeps `varformer --help` start-up instant
    from varformer.model import VarFormerSettings, save_varformer
    from varformer.model.checkpoint_io import build_from_state_dict, convert_official
    from varformer.model.convert import read_official

    refuse_what_needs_no_conversion(args.checkpoint)
    sd = read_official(args.checkpoint, key=args.key)
    arch, state_dict, report = convert_official(sd, with_report=True)
    model = build_from_state_dict(VarFormerSettings(**arch, cfg=args.cfg), state_dict, source=args.checkpoint)
    save_varformer(args.output, model)
    print(report.summary())
    print(f"wrote {args.output}")
    return 0


NO_CONVERSION = {
    "model": "it needs no conversion: pass it to 'varformer restore --weights' or 'varformer evaluate --restorer'",
    "training": "it needs no conversion: restore and evaluate take it directly (its EMA weights), or use its run's "
                "final_ema.pt",
    "var": "it needs no conversion: training reads it as model.var_path (or from checkpoints/)",
    "vqvae": "it needs no conversion: training reads it as model.vae_path (or from checkpoints/)",
}


def refuse_what_needs_no_conversion(path: str) -> None:
    """One line for a file that is not the official VarFormer checkpoint: what it is and what to do with it."""
    # start-up: imported when the command runs
    from varformer.errors import CheckpointMismatchError
    from varformer.model.weights_files import inspect_weights
    if not os.path.isfile(path):
        return  # read_official says where to download the released file
    info = inspect_weights(path)
    if info.kind == "official":
        return
    what = NO_CONVERSION.get(info.kind, "'convert official' takes the released VarFormer checkpoint "
                                        "(net_g_last.pth from https://huggingface.co/wsy541/VarFormer)")
    raise CheckpointMismatchError(f"{path} is {info.describe()}; {what}")
