"""``varformer convert official|restorevar|restorevar-to-official CKPT -o OUT``: released weights <-> our format.

- ``official``: the released VarFormer BasicSR checkpoint; the layout (stage, VAR depth, VQVAE width,
  cross-attention blocks, dec_adjust) is inferred from the tensors; every tensor is mapped with a shape check or
  reported as inert and dropped; anything else stops the conversion.
- ``restorevar``: RestoreVAR's ``restorevar.pth`` with ``--vae vae_restorevar.ckpt`` (and optionally
  ``--tokenizer-vae vae_ch160v4096z32.pth``) -> one RestoreVAR checkpoint of ours; strict (the constant buffers of
  the file are checked against ours).
- ``restorevar-to-official``: one of our RestoreVAR checkpoints -> ``OUT/restorevar.pth`` and
  ``OUT/vae_restorevar.ckpt`` in the official layouts.
"""
from __future__ import annotations

import argparse
import os


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", choices=["official", "restorevar", "restorevar-to-official"],
                        help="official: VarFormer's BasicSR file; restorevar: RestoreVAR's restorevar.pth (+ --vae); "
                             "restorevar-to-official: our RestoreVAR checkpoint back to the official files")
    parser.add_argument("checkpoint", help="the file to convert (net_g_last.pth, restorevar.pth, or ours)")
    parser.add_argument("-o", "--output", required=True,
                        help="output file (.safetensors or a torch file; restorevar-to-official: a folder)")
    parser.add_argument("--key", default=None,
                        help="official: entry of the BasicSR checkpoint to convert (default params_ema; or params)")
    parser.add_argument("--cfg", type=float, default=0.5, help="official: CFG strength stored in the config")
    parser.add_argument("--vae", default=None, metavar="PATH",
                        help="restorevar: vae_restorevar.ckpt (the VQVAE with the fine-tuned decoder); default: "
                             "checkpoints/vae_restorevar.ckpt")
    parser.add_argument("--tokenizer-vae", default=None, metavar="PATH",
                        help="restorevar: a separate tokenizer VQVAE (vae_ch160v4096z32.pth) for training; default: "
                             "the --vae one")


def run(args: argparse.Namespace) -> int:
    # imported when the command runs, not at module level: keeps `varformer --help` start-up instant
    import torch

    if args.source == "restorevar":
        from varformer.restorevar import RestoreVAR, save_restorevar
        model = RestoreVAR.from_official(args.checkpoint, args.vae, tokenizer_vae=args.tokenizer_vae)
        save_restorevar(args.output, model)
        s = model.settings()
        print(f"RestoreVAR depth {s.depth}, width {s.embed_dim}, scales {s.patch_nums}, refiner depth "
              f"{s.refiner_depth}: every tensor placed, constant buffers checked")
        print(f"wrote {args.output}")
        return 0
    if args.source == "restorevar-to-official":
        from varformer.restorevar import read_restorevar, to_official_restorevar
        settings, sd = read_restorevar(args.checkpoint)
        var_sd, vae_sd = to_official_restorevar(sd, settings)
        os.makedirs(args.output, exist_ok=True)
        for name, part in (("restorevar.pth", var_sd), ("vae_restorevar.ckpt", vae_sd)):
            torch.save(part, os.path.join(args.output, name))
            print(f"wrote {os.path.join(args.output, name)} ({len(part)} tensors)")
        return 0

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
