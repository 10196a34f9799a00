"""``varformer benchmark backbone|model|train``: speed, FLOPs and memory of the VAR backbone, the whole restorer
(VarFormer, RestoreVAR, or both side by side from one run: ``model --method both``), or a training step."""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict

from varformer.errors import VarformerError


def _hw(text: str):
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW, e.g. 2160x3840, got {text!r}") from None
    if h < 1 or w < 1:
        raise argparse.ArgumentTypeError(f"image size must be positive, got {text!r}")
    return h, w


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="what", required=True, metavar="{backbone,model,train}")

    b = sub.add_parser("backbone", help="VQVAE encoding, teacher-forced VAR forward, KV-cached generation")
    b.add_argument("--depth", type=int, default=16)
    b.add_argument("--vae-ch", type=int, default=160)
    b.add_argument("--batch", type=int, default=1)
    b.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    b.add_argument("--precision", nargs="+", choices=["fp32", "bf16", "fp16"], default=["fp32", "bf16"])
    b.add_argument("--repeat", type=int, default=1)
    b.add_argument("--ops", nargs="+", default=["encode", "teacher_forced", "generate_greedy", "generate_sampled"])
    b.add_argument("--json", metavar="PATH", help="also write the raw result as JSON")

    m = sub.add_parser("model", help="the whole VarFormer (VAR loop included) vs the official-style reference; "
                                     "RestoreVAR with --method restorevar, both side by side with --method both")
    m.add_argument("--method", choices=["varformer", "restorevar", "both"], default="varformer",
                   help="which restorer (both: one run, RestoreVAR's latency/FLOPs/memory beside VarFormer's)")
    m.add_argument("--patch-nums", type=int, nargs="+", default=None, metavar="PN",
                   help="RestoreVAR: scales (default the released 512-px list 1 2 3 4 6 9 13 18 24 32)")
    m.add_argument("--refiner-depth", type=int, default=12, help="RestoreVAR: refiner layers (default 12)")
    m.add_argument("--depth", type=int, default=16, help="VAR depth (default 16, the released model)")
    m.add_argument("--vae-ch", type=int, default=160, help="VQVAE / U-Net width (default 160; 32 for a quick run)")
    m.add_argument("--n-cross", type=int, default=None, help="cross-attention blocks (default depth // 2)")
    m.add_argument("--weights", default=None, metavar="PATH",
                   help="a VarFormer (or, with --method restorevar, RestoreVAR) checkpoint (default: random weights, "
                        "which do not change timings)")
    m.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    m.add_argument("--precision", nargs="+", choices=["auto", "fp32", "bf16"], default=["fp32", "auto"],
                   help="default: fp32 and auto (the precision restore picks: bf16 where the device computes it "
                        "natively, else fp32 again); bf16 runs as restore runs it: a copy of the model with its "
                        "bf16-eligible weights held in bf16 and its convolutions channels-last; fp32 and the "
                        "reference use the float32 model")
    m.add_argument("--bf16-transformer", action="store_true",
                   help="with bf16: also run the VAR scale loop in bf16 (the model keeps it fp32 by default)")
    m.add_argument("--batch", type=int, default=4, help="batch for the throughput measurement (1: skip it)")
    m.add_argument("--warmup", type=int, default=1)
    m.add_argument("--repeat", type=int, default=2, help="timed rounds (median)")
    m.add_argument("--no-reference", action="store_true", help="skip the official-style reference path")
    m.add_argument("--bf16-check", nargs="?", type=int, const=0, default=None, metavar="N",
                   help="mean PSNR of bf16 vs fp32 outputs over the demo test set (built if needed); "
                        "N: only the first N images of every task")
    m.add_argument("--image", type=_hw, metavar="HxW",
                   help="also restore one image of this size end to end with tiling, e.g. 2160x3840")
    m.add_argument("--full-size-flops", action="store_true",
                   help="also count the FLOPs of the full-size model (depth 16, vae_ch 160) without computing")
    m.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    m.add_argument("--json", metavar="PATH", help="also write the raw result as JSON")

    t = sub.add_parser("train", help="images/s and peak memory of a training step (small config), activation "
                                     "memory of the official config (meta device)")
    t.add_argument("--stage", type=int, choices=[1, 2], default=2)
    t.add_argument("--batch", type=int, default=2)
    t.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                   help="auto (default): bf16 where the device computes it natively, else fp32")
    t.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    t.add_argument("--steps", type=int, default=2, help="timed optimiser steps after one warm-up step")
    t.add_argument("--skip-small", action="store_true", help="only the meta-device estimate of the official config")
    t.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")


def run(args: argparse.Namespace) -> int:
    # imported when the command runs, not at module level: keeps `varformer --help` start-up instant
    import torch

    from varformer.perf.backbone import format_table, run_backbone_benchmark
    from varformer.perf.model import ModelBenchmarkOptions, run_model_benchmark
    from varformer.perf.report import format_model_table
    from varformer.perf.restorevar import (RestoreVARBenchmarkOptions, format_comparison, format_restorevar_table,
                                           run_restorevar_benchmark)
    from varformer.perf.training import run_training_benchmark
    from varformer.restorevar import PATCH_NUMS_512
    from varformer.runtime import resolve_device, resolve_precision

    def resolved(precision: str) -> str:  # "auto" as the one precision policy resolves it on this device
        return resolve_precision(precision, resolve_device(args.device)) if precision == "auto" else precision

    log = lambda msg: print(f"benchmark: {msg}", file=sys.stderr, flush=True)  # noqa: E731
    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    try:
        if args.what == "backbone":
            result = run_backbone_benchmark(depth=args.depth, batch=args.batch, device=args.device,
                                            precisions=tuple(args.precision), vae_ch=args.vae_ch,
                                            repeat=args.repeat, ops=tuple(args.ops))
            print(format_table(result))
            _write_json(args.json, result)
        elif args.what == "train":
            print("\n".join(run_training_benchmark(args.stage, args.batch, resolved(args.precision), args.device,
                                                   args.steps,
                                                   not args.skip_small, log=log)))
        else:
            if args.method == "both" and args.weights:
                raise VarformerError("--weights names one model; --method both runs random weights of each")
            result = rv_result = None
            precisions = tuple(dict.fromkeys(resolved(p) for p in args.precision))
            if args.method in ("varformer", "both"):
                opts = ModelBenchmarkOptions(
                    depth=args.depth, vae_ch=args.vae_ch, n_cross=args.n_cross, weights=args.weights,
                    device=args.device, precisions=precisions, batch=args.batch, warmup=args.warmup,
                    repeat=args.repeat, reference=not args.no_reference, bf16_check=args.bf16_check is not None,
                    bf16_check_images_per_task=args.bf16_check or None, image_hw=args.image,
                    full_size_flops=args.full_size_flops, bf16_transformer=args.bf16_transformer)
                result = run_model_benchmark(opts, log=log)
                print(format_model_table(result))
            if args.method in ("restorevar", "both"):
                rv_opts = RestoreVARBenchmarkOptions(
                    depth=args.depth, vae_ch=args.vae_ch, patch_nums=tuple(args.patch_nums or PATCH_NUMS_512),
                    refiner_depth=args.refiner_depth, weights=args.weights, device=args.device,
                    precisions=precisions, warmup=args.warmup, repeat=args.repeat,
                    full_size_flops=args.full_size_flops)
                rv_result = run_restorevar_benchmark(rv_opts, log=log)
                print(("\n" if result else "") + format_restorevar_table(rv_result))
            if result and rv_result:
                print("\n" + format_comparison(result, rv_result, precisions))
            _write_json(args.json, {k: asdict(v) for k, v in (("varformer", result), ("restorevar", rv_result)) if v}
                        if args.method != "varformer" else asdict(result))
    except ValueError as e:
        raise VarformerError(str(e)) from None
    return 0


def _write_json(path, result) -> None:
    if path:
        with open(path, "w") as fh:
            json.dump(result, fh, indent=2, default=str)
