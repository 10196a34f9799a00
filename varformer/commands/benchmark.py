"""``varformer benchmark backbone|model|train``: speed, FLOPs and memory of the VAR backbone, of any registered
method's whole model (several side by side from one run: ``model --method A B`` or ``--method all``), or of a
training step of a method's stage. Methods come from ``varformer.methods.registry``; their sizes change through
``--set key=value`` (the released settings of each method's benchmark entry)."""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict

from varformer.commands import add_old_spelling
from varformer.errors import VarformerError

# old size flags of `model`, kept as aliases of --set: (flag, setting, nargs)
DEPRECATED_SIZE_FLAGS = (("--depth", "depth", None), ("--vae-ch", "vae_ch", None), ("--n-cross", "n_cross", None),
                         ("--patch-nums", "patch_nums", "+"), ("--refiner-depth", "refiner_depth", None))
ALL = "all"
OLD_ALL = "both"   # the old spelling of every method


def _hw(text: str):
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW, e.g. 2160x3840, got {text!r}") from None
    if h < 1 or w < 1:
        raise argparse.ArgumentTypeError(f"image size must be positive, got {text!r}")
    return h, w


def add_arguments(p: argparse.ArgumentParser) -> None:
    # imported here: the registry imports every method's model code, which `varformer --help` must not wait for
    # (start-up time); `varformer benchmark --help` lists the methods it finds
    from varformer.methods import registry
    methods = registry.names()
    sub = p.add_subparsers(dest="what", required=True, metavar="{backbone,model,train}")

    b = sub.add_parser("backbone", help="VQVAE encoding, teacher-forced VAR forward, KV-cached generation")
    b.add_argument("--depth", type=int, default=16)
    b.add_argument("--vae-ch", type=int, default=160)
    b.add_argument("--batch-size", type=int, default=1)
    add_old_spelling(b, "--batch", "--batch-size", "batch_size", type=int)
    b.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    b.add_argument("--precision", nargs="+", choices=["fp32", "bf16", "fp16"], default=["fp32", "bf16"])
    b.add_argument("--repeat", type=int, default=1)
    b.add_argument("--ops", nargs="+", default=["encode", "teacher_forced", "generate_greedy", "generate_sampled"])
    b.add_argument("--threads", type=int, default=None, help="torch CPU threads for the run (default: torch's)")
    b.add_argument("--json", metavar="PATH", help="also write the raw result as JSON")

    m = sub.add_parser("model", help="the whole model of one or more methods (their released sizes, random "
                                     "weights), side by side from one run")
    m.add_argument("--method", nargs="+", choices=[*methods, ALL, OLD_ALL], default=None, metavar="NAME",
                   help=f"methods to benchmark: {', '.join(methods)}, or {ALL} (default: {registry.DEFAULT}, or the "
                        "method of --weights)")
    m.add_argument("--set", dest="overrides", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="change the released settings, checked against each method's settings: key=value applies to "
                        "every method with that setting, NAME.key=value to one (e.g. --set depth=2 vae_ch=32)")
    for flag, key, nargs in DEPRECATED_SIZE_FLAGS:
        m.add_argument(flag, dest=f"old_{key}", type=int, nargs=nargs, default=None,
                       help=f"deprecated: --set {key}=...")
    m.add_argument("--switch", dest="switches", nargs="+", action="extend", default=[], metavar="NAME",
                   help="a method's named benchmark switch (" + ", ".join(
                       f"{s.name}: {s.help}" for spec in registry.methods().values() if spec.benchmark
                       for s in spec.benchmark.switches) + ")")
    m.add_argument("--bf16-transformer", action="store_true", help="deprecated: --switch bf16-transformer")
    m.add_argument("--weights", default=None, metavar="PATH",
                   help="a model file of any method (default: random weights of the released size, which do not "
                        "change timings)")
    m.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    m.add_argument("--precision", nargs="+", choices=["auto", "fp32", "bf16"], default=["fp32", "auto"],
                   help="default: fp32 and auto (the precision restore picks: bf16 where the device computes it "
                        "natively, else fp32 again); bf16 runs as restore runs it: a copy of the model with its "
                        "bf16-eligible weights held in bf16 where the model offers it; fp32 and the reference use "
                        "the float32 model")
    m.add_argument("--batch-size", type=int, default=4, help="batch for the throughput measurement (1: skip it)")
    add_old_spelling(m, "--batch", "--batch-size", "batch_size", type=int)
    m.add_argument("--warmup", type=int, default=1)
    m.add_argument("--repeat", type=int, default=2, help="timed rounds (median)")
    m.add_argument("--no-reference", action="store_true", help="skip a method's official-style reference path")
    m.add_argument("--no-bounds", action="store_true", help="skip the part bounds (FLOPs and bytes per part)")
    m.add_argument("--bf16-check", nargs="?", type=int, const=0, default=None, metavar="N",
                   help="mean PSNR of bf16 vs fp32 outputs over the demo test set (built if needed); "
                        "N: only the first N images of every task")
    m.add_argument("--image", type=_hw, metavar="HxW",
                   help="also restore one image of this size end to end as evaluate runs it, e.g. 2160x3840")
    m.add_argument("--full-size-flops", action="store_true",
                   help="also count the FLOPs of the released size without computing")
    m.add_argument("--threads", type=int, default=None, help="torch CPU threads for the run (default: torch's)")
    m.add_argument("--json", metavar="PATH", help="also write the raw result as JSON")

    t = sub.add_parser("train", help="seconds per step and peak memory of a stage's demo recipe (real optimiser "
                                     "steps), activation memory of its shipped full recipe (fake tensors)")
    t.add_argument("--method", choices=methods, default=registry.DEFAULT, help=f"default: {registry.DEFAULT}")
    t.add_argument("--stage", default=None, metavar="S",
                   help="one of the method's stages (" + "; ".join(f"{s.name}: {', '.join(s.stage_names())}"
                                                                  for s in registry.methods().values())
                        + "); default: the last stage of its demo recipe")
    t.add_argument("--batch-size", type=int, default=None, help="images per step (default: the demo recipe's)")
    add_old_spelling(t, "--batch", "--batch-size", "batch_size", type=int)
    t.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                   help="auto (default): bf16 where the device computes it natively, else fp32")
    t.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    t.add_argument("--steps", type=int, default=2, help="timed optimiser steps after one warm-up step")
    t.add_argument("--skip-small", action="store_true", help="only the fake-tensor estimate of the full recipe")
    t.add_argument("--no-estimate", action="store_true", help="only the demo recipe's steps")
    t.add_argument("--threads", type=int, default=None, help="torch CPU threads for the run (default: torch's)")


def _deprecated(old: str, new: str) -> None:
    print(f"varformer benchmark: {old} is deprecated; use {new}", file=sys.stderr, flush=True)


def _model_arguments(args: argparse.Namespace):
    """(methods, --set items, switches) with the old spellings translated (each says its new spelling)."""
    methods = tuple(args.method or ())
    if OLD_ALL in methods:
        _deprecated(f"--method {OLD_ALL}", f"--method {ALL} (or name the methods)")
        methods = tuple(ALL if n == OLD_ALL else n for n in methods)
    overrides = list(args.overrides)
    for flag, key, nargs in DEPRECATED_SIZE_FLAGS:
        value = getattr(args, f"old_{key}")
        if value is not None:
            item = f"{key}=[{','.join(map(str, value))}]" if nargs else f"{key}={value}"
            _deprecated(flag, f"--set {item}")
            overrides.append(item)
    switches = list(args.switches)
    if args.bf16_transformer:
        _deprecated("--bf16-transformer", "--switch bf16-transformer")
        switches.append("bf16-transformer")
    return methods, tuple(overrides), tuple(dict.fromkeys(switches))


def _stage(text):
    """The stage name; an old stage number N is read as stageN (and says so)."""
    if text is not None and text.isdigit():
        _deprecated(f"--stage {text}", f"--stage stage{text}")
        return f"stage{text}"
    return text


def run(args: argparse.Namespace) -> int:
    # imported when the command runs, not at module level: keeps `varformer --help` start-up instant
    from varformer.perf.backbone import format_table, run_backbone_benchmark  # start-up
    from varformer.perf.model import ModelBenchmarkOptions, run_model_benchmark  # start-up
    from varformer.perf.report import format_model_report  # start-up
    from varformer.perf.training import run_training_benchmark  # start-up
    from varformer.runtime import resolve_device, resolve_precision  # start-up

    def resolved(precision: str) -> str:  # "auto" as the one precision policy resolves it on this device
        return resolve_precision(precision, resolve_device(args.device)) if precision == "auto" else precision

    log = lambda msg: print(f"benchmark: {msg}", file=sys.stderr, flush=True)  # noqa: E731
    try:
        if args.what == "backbone":
            result = run_backbone_benchmark(depth=args.depth, batch=args.batch_size, device=args.device,
                                            precisions=tuple(args.precision), vae_ch=args.vae_ch,
                                            repeat=args.repeat, ops=tuple(args.ops), threads=args.threads)
            print(format_table(result))
            _write_json(args.json, result)
        elif args.what == "train":
            print("\n".join(run_training_benchmark(args.method, _stage(args.stage), args.batch_size, args.precision,
                                                   args.device, args.steps, small=not args.skip_small,
                                                   estimate=not args.no_estimate, threads=args.threads, log=log)))
        else:
            methods, overrides, switches = _model_arguments(args)
            opts = ModelBenchmarkOptions(
                methods=methods, overrides=overrides, switches=switches, weights=args.weights, device=args.device,
                precisions=tuple(dict.fromkeys(resolved(p) for p in args.precision)), batch=args.batch_size,
                warmup=args.warmup, repeat=args.repeat, reference=not args.no_reference, bounds=not args.no_bounds,
                bf16_check=args.bf16_check is not None, bf16_check_images_per_task=args.bf16_check or None,
                image_hw=args.image, full_size_flops=args.full_size_flops, threads=args.threads)
            result = run_model_benchmark(opts, log=log)
            print(format_model_report(result))
            _write_json(args.json, asdict(result))
    except ValueError as e:
        raise VarformerError(str(e)) from None
    return 0


def _write_json(path, result) -> None:
    if path:
        # imported when a JSON file is asked for: keeps `varformer --help` start-up instant
        from varformer.files import write_text_atomic
        write_text_atomic(path, json.dumps(result, indent=2, default=str))
