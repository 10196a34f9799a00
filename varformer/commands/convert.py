"""``varformer convert official CKPT -o OUT [--key params]``: the released BasicSR checkpoint -> our format.

The layout (stage, VAR depth, VQVAE width, cross-attention blocks, dec_adjust) is inferred from the tensors; every
tensor is mapped with a shape check or reported as inert and dropped; anything else stops the conversion.
"""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", choices=["official"], help="checkpoint flavour to convert from")
    parser.add_argument("checkpoint", help="official checkpoint (e.g. net_g_last.pth from wsy541/VarFormer)")
    parser.add_argument("-o", "--output", required=True,
                        help="output file: .safetensors (config in the metadata) or a torch file (.pt/.pth)")
    parser.add_argument("--key", default="params_ema",
                        help="entry of the BasicSR checkpoint to convert (default params_ema; or params)")
    parser.add_argument("--cfg", type=float, default=0.5, help="CFG strength stored in the config (default 0.5)")


def run(args: argparse.Namespace) -> int:
    # imported when the command runs, not at module level: keeps `varformer --help` start-up instant
    from varformer.model import VarFormerSettings, save_varformer
    from varformer.model.checkpoint_io import build_from_state_dict, convert_official
    from varformer.model.convert import read_official

    sd = read_official(args.checkpoint, key=args.key)
    arch, state_dict, report = convert_official(sd, with_report=True)
    model = build_from_state_dict(VarFormerSettings(**arch, cfg=args.cfg), state_dict, source=args.checkpoint)
    save_varformer(args.output, model)
    print(report.summary())
    print(f"wrote {args.output}")
    return 0
