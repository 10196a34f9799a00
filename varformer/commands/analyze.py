"""``varformer analyze alignment|scale-replacement|dae-weights --weights W --root DATA``: the paper's analysis
figures, each a PNG and CSV files in the output folder (docs/analysis.md)."""
from __future__ import annotations

import argparse

ANALYSES = {
    "alignment": "VAR features of degraded and clean images before/after the next-scale prediction (PCA)",
    "scale-replacement": "clean tokens at the k coarsest vs finest scales of the degraded image: PSNR per task",
    "dae-weights": "mean DAE scale weight per level, scale and task",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("analysis", choices=list(ANALYSES), help="; ".join(f"{k}: {v}" for k, v in ANALYSES.items()))
    parser.add_argument("--weights", required=True,
                        help="VarFormer weights (ours, or the official net_g_last.pth); scale-replacement uses only "
                             "their frozen VQVAE")
    parser.add_argument("--root", required=True, help="benchmark folder, or 'demo' for the built-in demo set")
    parser.add_argument("--benchmarks", nargs="+", default=None,
                        help="benchmarks to draw from (default: the demo sets, or those found of rain100h, rain100l, "
                             "test100, sots-outdoor, gopro, lol, cbsd68-s25, sidd-val)")
    parser.add_argument("--max-images", type=int, default=8, help="images per task (default 8)")
    parser.add_argument("--output-dir", "-o", default="outputs/analysis")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=4)


def run(args: argparse.Namespace) -> int:
    # imported when the command runs, not at module level: keeps `varformer --help` start-up instant
    from varformer.analysis import (alignment_analysis, dae_weights_analysis, images_per_task, load_model,
                                    scale_replacement_analysis)
    from varformer.errors import ConfigError
    from varformer.runtime import resolve_device

    if args.max_images < 1:
        raise ConfigError(f"--max-images must be >= 1, got {args.max_images}")
    device = resolve_device(args.device)
    model = load_model(args.weights, device)
    tasks = images_per_task(args.root, args.benchmarks, args.max_images)
    print("images per task: " + ", ".join(f"{t.task} {len(t.names)}" for t in tasks))
    if args.analysis == "alignment":
        res = alignment_analysis(model, tasks, args.output_dir, args.batch_size)
        files = [res.png, res.points_csv, res.summary_csv]
        for r in res.summary:
            print(f"  {r['task']}: degraded->clean distance before {r['dist_degraded_clean_before']:.3f}, "
                  f"after {r['dist_degraded_clean_after']:.3f}")
    elif args.analysis == "scale-replacement":
        res = scale_replacement_analysis(model.vae, tasks, args.output_dir, args.batch_size)
        files = [res.png, res.csv]
        for task, c in res.curves.items():
            half = len(c["coarse"]) // 2
            print(f"  {task}: PSNR {c['coarse'][0]:.2f} dB degraded; {half} coarsest scales clean "
                  f"{c['coarse'][half]:.2f}, {half} finest clean {c['fine'][half]:.2f}")
    else:
        res = dae_weights_analysis(model, tasks, args.output_dir, args.batch_size)
        files = [res.png, res.csv]
    print("wrote " + ", ".join(files))
    return 0
