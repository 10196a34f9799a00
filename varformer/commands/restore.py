"""``varformer restore INPUT... -o OUT``: restore files, folders or globs of any size with seamless tiling."""
from __future__ import annotations

import argparse

from varformer.commands import add_old_spelling, weights_help


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders (top level) or glob patterns")
    p.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="output folder (PNG files named like the inputs); not a file name, not an input folder")
    # imported here: the registry names the default weights (start-up time of `varformer --help` is unaffected)
    from varformer.methods import registry  # start-up
    p.add_argument("--weights", default=None, metavar="PATH",
                   help=weights_help(registry.get(registry.DEFAULT).default_weights))
    p.add_argument("--scale", type=int, default=None,
                   help="output scale of a super-resolver that upsamples its input first (default: its method's, "
                        "as its release); 'identity' with a scale: bicubic upsampling")
    p.add_argument("--prompt", default=None, metavar="TEXT",
                   help="the text prompt of a text-conditioned model (default: its method's, e.g. a caption of "
                        "each input through its text cache)")
    p.add_argument("--fit", choices=["tile", "resize"], default=None,
                   help="images of another size than the model's input: overlapping tiles, or resized to the input "
                        "and back (default: as the method's release does)")
    p.add_argument("--device", default="auto", help="auto (cuda when available, else cpu), cpu, cuda or cuda:N")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                   help="auto (default): bf16 where the device computes it natively (CUDA, CPUs with AVX-512 BF16 "
                        "or AMX), else fp32; bf16: autocast for the network (the VQVAE quantizer stays fp32)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the U-Net (CUDA: with CUDA graphs); the first call compiles for minutes")
    p.add_argument("--tile", type=int, default=None,
                   help="tile size (default: the model's input size)")
    p.add_argument("--overlap", type=int, default=None,
                   help="minimum overlap of neighbouring tiles in px (default: the method's; 32 for most)")
    p.add_argument("--batch-size", type=int, default=4, help="tiles per model call, shared across images (default 4)")
    add_old_spelling(p, "--batch", "--batch-size", "batch_size", type=int)
    p.add_argument("--skip-existing", action="store_true", help="leave inputs whose output PNG already exists")
    p.add_argument("--overwrite", action="store_true",
                   help="replace existing files of the output names that an earlier restore did not write "
                        "(refused otherwise; an earlier restore's outputs are replaced anyway)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    # imported when the command runs, not at module level: keeps `varformer --help` start-up instant
    from varformer.inference import load_restorer
    from varformer.restore import plan_restore, restore_paths  # start-up

    # inputs, output names and existing outputs checked before a model is loaded
    plan_restore(args.inputs, args.output, args.overwrite, args.skip_existing)
    restorer = load_restorer(args.weights, device=args.device, precision=args.precision, compile_unet=args.compile,
                             scale=args.scale, prompt=args.prompt)
    report = restore_paths(args.inputs, args.output, restorer, tile=args.tile, overlap=args.overlap,
                           batch_size=args.batch_size, fit=args.fit, skip_existing=args.skip_existing,
                           overwrite=args.overwrite,
                           progress=not args.no_progress)
    print(f"{report.summary()} -> {args.output}")
    return 1 if report.failed else 0
