"""``varformer evaluate``: a restorer on benchmarks under one or more protocols; CSV, JSON and a markdown table."""
from __future__ import annotations

import argparse
import os

from varformer.commands import add_old_spelling, weights_help


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # imported here: the protocols list their presets (start-up time of `varformer --help` is unaffected)
    from varformer.evaluation.protocols import PROTOCOLS  # start-up
    parser.add_argument("--weights", default="identity", help=weights_help("identity"))
    parser.add_argument("--scale", type=int, default=None,
                        help="output scale of a pre-upsampling super-resolver (default: its method's); 'identity' "
                             "with a scale: bicubic upsampling")
    parser.add_argument("--prompt", default=None, metavar="TEXT",
                        help="one text prompt for every image (text-conditioned models; default: their method's, "
                             "e.g. a caption of each LQ)")
    parser.add_argument("--benchmarks", nargs="+", default=None, metavar="NAME[=ROOT]",
                        help="benchmark names ('varformer data list'), each optionally with its own root; "
                             "'demo' = every demo-<task> set")
    parser.add_argument("--list", nargs="+", default=None, metavar="FILE.json", dest="lists",
                        help="the authors' JSON lists (test_jsons/*.json: image_path, target_path, degradation, "
                             "dataset); relative paths are under --root; one benchmark per dataset value; a preset "
                             "may cap the entries as its release does (docs/evaluation.md)")
    parser.add_argument("--root", default=None, help="folder holding the benchmarks (searched 6 levels deep); for "
                                                     "--list, the folder the list's relative paths start from")
    parser.add_argument("--demo-cache", default=None, help="demo set folder (default: the user's cache directory)")
    parser.add_argument("--protocol", nargs="+", default=None,
                        help="one or more of: " + ", ".join(PROTOCOLS) + " (docs/evaluation.md); several "
                             "protocols write one sub-folder each")
    parser.add_argument("-o", "--output", default=None, help="where results go (default: outputs/eval)")
    add_old_spelling(parser, "--output-dir", "-o/--output", "output")
    add_old_spelling(parser, "--restorer", "--weights", "weights")
    parser.add_argument("--overwrite", action="store_true", help="replace results already in the output folder")
    parser.add_argument("--save-images", action="store_true", help="also write the restored images (PNG)")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--overlap", type=int, default=None, help="tile overlap (pixels shared by neighbour tiles)")
    parser.add_argument("--tile", type=int, default=None,
                        help="any-size restorers: images larger than this run on tiles of this size "
                             "(fixed-size restorers always tile at their input size)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--precision", default=None, choices=["auto", "fp32", "bf16"],
                        help="default: the preset's own precision where it records one (the papers' evaluations: "
                             "fp32), else eval.precision (auto: bf16 where the device computes it "
                             "natively, else fp32); fp32 or bf16 given explicitly apply to every protocol")
    parser.add_argument("--workers", type=int, default=2, help="image-loading processes")
    parser.add_argument("--lpips", action="store_true", help="also measure LPIPS (needs the AlexNet weights file)")
    parser.add_argument("--metrics", nargs="+", default=None, metavar="NAME",
                        help="what to measure (default: psnr ssim, + lpips where the protocol has it): psnr ssim "
                             "lpips, and with pyiqa (pip install -e '.[nr]'; weights in its cache, checked first) "
                             "musiq clipiqa maniqa niqe liqe qalign piqe fid (fid: one value per benchmark)")
    parser.add_argument("--allow-unpaired", action="store_true", help="skip unpaired files instead of stopping")
    parser.add_argument("--y-channel", action="store_true", default=None,
                        help="full protocol: measure on Y (MATLAB BT.601) instead of RGB")
    parser.add_argument("--ssim", default=None, help="full protocol: SSIM variant (basicsr, replicate, skimage_default)")
    parser.add_argument("--crop-border", type=int, default=None, help="full protocol: pixels dropped at each edge")
    parser.add_argument("--config", default=None, help="YAML config whose 'eval' section supplies defaults")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_old_spelling(parser, "--quiet", "--no-progress", "no_progress", takes_value=False)


def run(args: argparse.Namespace) -> int:
    # imported when the command runs, not at module level: keeps `varformer --help` start-up instant
    from varformer.config import load_config
    from varformer.data.catalog import get_benchmark  # start-up
    from varformer.errors import ConfigError  # start-up
    from varformer.evaluation import (check_output_dir, check_protocol_needs, evaluate, get_protocol,
                                      open_benchmark, parse_benchmarks, with_metric_overrides)  # start-up
    from varformer.evaluation.evaluate import metric_names, open_lists, run_precision  # start-up
    from varformer.inference import load_restorer  # start-up

    ev = load_config(args.config).eval
    protocols = args.protocol or [ev.protocol]
    output_dir = args.output or ev.output_dir
    root = args.root or ev.root
    items = args.benchmarks or ([] if args.lists else list(ev.benchmarks))
    benchmarks = parse_benchmarks(items, root, args.demo_cache) if items or not args.lists else []
    overrides = dict(y_channel=args.y_channel, ssim_mode=args.ssim, crop_border=args.crop_border)
    if any(v is not None for v in overrides.values()) and protocols != ["full"]:
        raise ConfigError("--y-channel / --ssim / --crop-border change the metrics of the 'full' protocol only; "
                          "the paper protocol and the peer presets are fixed")
    outs = {name: output_dir if len(protocols) == 1 else os.path.join(output_dir, name) for name in protocols}
    for out in outs.values():  # refuse before any work
        check_output_dir(out, args.overwrite)
    lpips = True if (args.lpips or ev.lpips) else None
    metrics = list(args.metrics) + (["lpips"] if lpips and "lpips" not in args.metrics else []) if args.metrics \
        else None
    protos = {name: with_metric_overrides(get_protocol(name), lpips=lpips, **overrides) for name in protocols}
    for proto in protos.values():  # weights, OpenCV and pyiqa checked before any data is read or model loaded
        check_protocol_needs(proto, benchmarks, metric_names(proto, metrics))
    opened = set()
    for proto in protos.values():  # every benchmark found, paired and readable before a model is loaded
        for name, bench_root in benchmarks:
            bench = get_benchmark(name)
            key = (name, bench_root, tuple(sorted(proto.readers_for(bench.task, bench.name).items())))
            if key not in opened:  # once per way of reading it
                opened.add(key)
                open_benchmark(name, bench_root, proto, args.allow_unpaired)
        open_lists(args.lists or [], root, proto)  # every list read and its files found
    restorers = {}
    for name, proto in protos.items():
        precision = run_precision(args.precision, ev.precision, proto)
        if precision not in restorers:
            extra = {k: v for k, v in (("scale", args.scale), ("prompt", args.prompt)) if v is not None}
            restorers[precision] = load_restorer(args.weights, args.device, precision, **extra)
        out = outs[name]
        result = evaluate(restorers[precision], benchmarks, proto, lists=args.lists or [], list_root=root,
                          metrics=metrics, output_dir=out, batch_size=args.batch_size or ev.batch_size,
                          overlap=args.overlap if args.overlap is not None else ev.overlap, tile=args.tile,
                          save_images=args.save_images or ev.save_images, overwrite=args.overwrite,
                          allow_unpaired=args.allow_unpaired, workers=args.workers, progress=not args.no_progress)
        print(result.markdown)
        print(f"results written to {out}")
    return 0
