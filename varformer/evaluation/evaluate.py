"""``evaluate``: run a restorer on benchmarks under a protocol and measure it; ``official_test_protocol``.

The restorer is a ``varformer.inference.Restorer`` (a plain callable on (B, 3, H, W) in [0, 1] is wrapped in one
as an any-size restorer), run on whole images as its method runs them (``varformer.inference.images``): a
super-resolver's output is ``scale`` times its input unless the protocol brings the LQ to the output size itself
(``lq_upsample``); per-image contexts (e.g. a caption's text features) come from the LQ as read, before the
protocol's resizes; a protocol with ``seed_per_image`` reseeds torch before each image, one image per call.
Protocols are in ``varformer.evaluation.protocols``, the tables in ``varformer.evaluation.report``.

Data: catalogue benchmarks under a root (``varformer.data.catalog``) and the authors' JSON lists
(``varformer.data.json_list``; the protocol's ``list_cap`` applies), each read as the protocol's authors read their
files. Metrics: ``psnr``, ``ssim``, ``lpips`` (ours) and pyiqa's no-reference metrics and FID
(``varformer.evaluation.iqa``), which read the restored image as the protocol's paper stored it
(``protocol.nr.saving``); FID is one value per benchmark. Weights and data are checked before any image is restored.

Outputs (``output_dir``): ``per_image.csv``, ``summary.json``, ``results.md``, ``crops/`` and ``report.html`` (the
visual report: ``varformer.evaluation.crops``, ``html_report``) and, with ``save_images``,
``images/<benchmark>/<name>.png``. Every output folder is checked before any work (docs/safety.md): a new or empty
folder, or one an earlier evaluation wrote (marked ``evaluation results``, ``varformer.files.MARKER_NAME``); a
folder that already holds results is refused unless ``overwrite``, which then removes the earlier results
(``RESULT_FILES``, ``images/`` included) once every check passed, and nothing else; a folder of the user's, a file,
a place that cannot be written, are refused in one line.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from varformer import metrics as M
from varformer.data.benchmark_data import BenchmarkDataset, benchmark_dataset
from varformer.data.catalog import expand_names, get_benchmark
from varformer.data.image_io import tensor_to_uint8, write_image
from varformer.data.json_list import list_datasets
from varformer.errors import ConfigError, DataError
from varformer.files import (claim_folder, folder_entries, mark_folder, read_json_or_none, remove_owned,
                             write_text_atomic)
from varformer.data.resize import resize_bilinear, resize_to
from varformer.evaluation.crops import CropGallery
from varformer.evaluation.html_report import write_html_report
from varformer.evaluation.iqa import IQA_METRICS, IqaScorer, check_iqa_metrics, check_metric_names, iqa_names
from varformer.evaluation.protocols import MetricSettings, Protocol, get_protocol
from varformer.evaluation.realblur import realblur_psnr_ssim, require_opencv
from varformer.evaluation.saved_images import to_uint8
from varformer.evaluation.report import render_markdown
from varformer.inference import Restorer
from varformer.inference.images import image_run, restore_batch

RESULT_FILES = ("per_image.csv", "summary.json", "results.md", "images", "crops", "report.html")
EVAL_KIND = "evaluation results"    # the output folder's marker (varformer.files.mark_folder)


def official_test_protocol(model: Callable[[torch.Tensor], torch.Tensor], image_rgb_uint8: np.ndarray) -> np.ndarray:
    """The official test script (varformer_test.py) on one image: /255, bilinear resize to 256x256 (cv2 INTER_LINEAR:
    half-pixel, no antialias), one forward with B = 1, clamp, x255, round -> uint8 (256, 256, 3).

    ``model`` maps [0, 1] to [0, 1] (our models normalise to [-1, 1] inside); the output is never resized back.
    """
    img = np.asarray(image_rgb_uint8)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise DataError(f"official_test_protocol needs an RGB uint8 (H, W, 3) image, got {img.dtype} {img.shape}")
    try:
        device = next(model.parameters()).device  # type: ignore[attr-defined]
    except (AttributeError, StopIteration):
        device = torch.device("cpu")
    x = torch.from_numpy(img.astype(np.float32) / 255.0).permute(2, 0, 1)
    x = resize_bilinear(x, 256)[None].to(device)
    with torch.no_grad():
        out = model(x)
    return out[0].float().clamp(0, 1).mul(255.0).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()


def run_restorer(restorer: Restorer, lq_B3HW: torch.Tensor, protocol: Protocol, overlap: int = 32,
                 tile_batch: int = 4, tile: Optional[int] = None,
                 contexts: Optional[Sequence[object]] = None) -> torch.Tensor:
    """The restorer on a batch of same-size images (``varformer.inference.images``): fixed-size restorers as their
    method runs other sizes (overlapping blended tiles of their size, or a resize); any-size ones on the whole
    image padded to their (and the protocol's) size multiple, or on ``tile``-sized tiles when the image is larger
    than ``tile`` (memory bound). A super-resolver's output is ``scale`` times the input, except under a protocol
    that brought the LQ to the output size itself (``lq_upsample``). ``contexts``: per image, from the LQ as read."""
    H, W = lq_B3HW.shape[-2:]
    upsampled = protocol.lq_upsample is not None
    m = math.lcm(restorer.size_multiple, protocol.pad_multiple)
    s = restorer.network_scale if upsampled else restorer.scale
    if restorer.image_context is not None and contexts is None:
        contexts = restorer.contexts_of(lq_B3HW)
    if restorer.input_size is not None or (tile is not None and max(H, W) > tile):
        if restorer.input_size is None and tile % m:
            raise ConfigError(f"tile {tile} is not a multiple of the restorer's size multiple {m}")
        run = image_run(restorer, tile=tile if restorer.input_size is None else None, overlap=overlap,
                        batch_size=tile_batch, upsampled=upsampled)
        out = restore_batch(restorer, lq_B3HW, run, contexts)
    else:
        x = lq_B3HW if upsampled else restorer.upsampled(lq_B3HW)
        h, w = x.shape[-2:]
        ph, pw = (-h) % m, (-w) % m
        x = F.pad(x, (0, pw, 0, ph), mode="reflect" if ph < h and pw < w else "replicate") if ph or pw else x
        ns = restorer.network_scale
        out = restorer.network(x, contexts)[..., :ns * h, :ns * w]
    if tuple(out.shape) != (*lq_B3HW.shape[:2], s * H, s * W):
        raise DataError(f"restorer '{restorer.name}' returned {tuple(out.shape)} for input {tuple(lq_B3HW.shape)}")
    return out.float().clamp(0, 1)


# ---------------------------------------------------------------------------------------------------------------
@dataclass
class EvalResult:
    summary: Dict[str, object]
    rows: List[Dict[str, object]]
    markdown: str
    output_dir: Optional[str] = None


def parse_benchmarks(items: Sequence[str], root: Optional[str] = None,
                     demo_cache: Optional[str] = None) -> List[Tuple[str, Optional[str]]]:
    """``name`` or ``name=root`` items; ``demo`` expands to every demo task. Benchmarks with a default root (the
    demo sets) use ``demo_cache`` when given, else their default; the others ``root``."""
    out: List[Tuple[str, Optional[str]]] = []
    for item in items:
        name, _, own_root = item.partition("=")
        for n in expand_names([name]):
            default = get_benchmark(n).default_root
            out.append((n, own_root or (demo_cache if default is not None else root)))
    if not out:
        raise ConfigError("no benchmarks given (e.g. --benchmarks demo, or --benchmarks rain100h test100 --root DIR)")
    return out


def _earlier_results(folder: str) -> bool:
    """An unmarked folder holding what an earlier version of the evaluator wrote: result files alone (and hidden
    temporaries), its summary.json one of ours."""
    entries = folder_entries(folder)
    if "summary.json" not in entries or not all(e in RESULT_FILES or e.startswith(".") for e in entries):
        return False
    summary = read_json_or_none(os.path.join(folder, "summary.json"))
    return isinstance(summary, dict) and "protocol" in summary and "benchmarks" in summary


def check_output_dir(output_dir: str, overwrite: bool) -> None:
    """Refused in one line before any work: a file, a place that cannot be written, a non-empty folder the
    evaluator did not write, and one holding results unless ``overwrite`` (module doc)."""
    claim_folder(output_dir, EVAL_KIND, "output folder", recognized=_earlier_results)
    existing = [f for f in RESULT_FILES if os.path.exists(os.path.join(output_dir, f))]
    if existing and not overwrite:
        raise DataError(f"output folder {output_dir} already has results ({', '.join(existing)}); "
                        f"choose another folder or pass --overwrite")


def prepare_output_dir(output_dir: str, overwrite: bool, log: Optional[Callable[[str], None]] = None) -> None:
    """Once every check passed: the folder marked as evaluation results, and with ``overwrite`` the earlier
    results removed (all of them: stale images or crops never sit beside new results)."""
    mark_folder(output_dir, EVAL_KIND)
    removed = remove_owned(output_dir, EVAL_KIND, RESULT_FILES) if overwrite else []
    if removed and log:
        log(f"--overwrite: removed the earlier results in {output_dir} ({', '.join(removed)})")


def metric_names(protocol: Protocol, metrics: Optional[Sequence[str]] = None) -> Tuple[str, ...]:
    """The metrics a run computes: ``metrics`` if given, else PSNR and SSIM (+ LPIPS where the protocol has it)."""
    if metrics is not None:
        names = check_metric_names(metrics)
        if not names:
            raise ConfigError("--metrics needs at least one metric")
        return names
    lpips = protocol.metrics.lpips or any(m.lpips for _, m in protocol.task_metrics)
    return ("psnr", "ssim") + (("lpips",) if lpips else ())


def check_protocol_needs(protocol: Protocol, benchmarks: Sequence[Union[str, Tuple[str, Optional[str]]]] = (),
                         metrics: Optional[Sequence[str]] = None) -> None:
    """Fail before any work when a protocol needs something missing: LPIPS the AlexNet weight file, Restormer's
    RealBlur measure OpenCV (an optional extra), pyiqa's metrics pyiqa and their weight files (one line naming the
    first missing file). ``benchmarks``: names or (name, root) pairs to be evaluated."""
    names = metric_names(protocol, metrics)
    if "lpips" in names:
        M.find_alexnet_weights()
    for item in benchmarks:
        bench = get_benchmark(item if isinstance(item, str) else item[0])
        if protocol.metrics_for(bench.task, bench.name).measure == "realblur":
            require_opencv(f"preset '{protocol.name}' on {bench.name}")
    check_iqa_metrics(names)


def run_precision(requested: Optional[str], configured: str, protocol: Protocol) -> str:
    """The precision a protocol's run uses: ``requested`` (``--precision``) or ``configured`` (``eval.precision``)
    when it names one (fp32, bf16); ``auto`` never changes a method's published protocol, so under ``auto`` a
    preset that records its paper's precision (paper, varformer-code, restorevar: fp32) gets that one."""
    for choice in (requested, configured):
        if choice is not None and choice != "auto":
            return choice
    return protocol.precision or "auto"


def open_lists(lists: Sequence[str], root: Optional[str], protocol: Protocol) -> list:
    """The datasets of the authors' JSON lists under the protocol's cap (LQ/GT may differ in size only where the
    protocol resizes both)."""
    return [ds for path in lists for ds in list_datasets(path, root, cap=protocol.list_cap,
                                                          allow_size_mismatch=protocol.resize is not None)]


def _batches(ds, protocol: Protocol, batch_size: int, workers: int):
    """Prepared (lq, gt, names) groups of up to ``batch_size`` images of one size (dataset order kept)."""
    loader = torch.utils.data.DataLoader(ds, batch_size=None, shuffle=False, num_workers=workers)
    group: List[Tuple[torch.Tensor, torch.Tensor, str, str, bool, torch.Tensor]] = []
    for item in loader:
        lq, gt = protocol.prepare(item["lq"], item["gt"])
        if group and (group[0][0].shape != lq.shape or len(group) == batch_size):
            yield group
            group = []
        group.append((lq, gt, item["name"], item.get("file", item["name"]), bool(item.get("gt_gray", False)),
                      item["lq"]))
    if group:
        yield group


def _mean_finite(values: Sequence[float]) -> Tuple[Optional[float], int]:
    finite = [v for v in values if math.isfinite(v)]
    return (float(np.mean(finite)) if finite else None), len(values) - len(finite)


def evaluate(restorer: Union[Restorer, Callable], benchmarks: Sequence[Tuple[str, Optional[str]]],
             protocol: Union[str, Protocol] = "paper", *, lists: Sequence[str] = (), list_root: Optional[str] = None,
             metrics: Optional[Sequence[str]] = None, output_dir: Optional[str] = None, batch_size: int = 4,
             overlap: int = 32, tile: Optional[int] = None, save_images: bool = False, overwrite: bool = False,
             allow_unpaired: bool = False, workers: int = 0, progress: bool = True, max_images: Optional[int] = None,
             log: Optional[Callable[[str], None]] = print) -> EvalResult:
    """Evaluate ``restorer`` on ``benchmarks`` ((name, root) pairs) and the authors' JSON ``lists`` (relative paths
    under ``list_root``) under ``protocol``, measuring ``metrics`` (default: ``metric_names``); see the module doc.
    ``max_images``: only the first N images of each set (a quick look; the tables mark it as a partial run).
    Every benchmark is opened (and its pairing checked) and every metric built before any image is restored."""
    proto = get_protocol(protocol) if isinstance(protocol, str) else protocol
    if not isinstance(restorer, Restorer):
        restorer = Restorer(getattr(restorer, "__name__", "restorer"), restorer)
    _check_arguments(restorer, batch_size, overlap, tile)
    if max_images is not None and max_images < 1:
        raise ConfigError(f"max_images must be >= 1, got {max_images}")
    if output_dir is not None:
        check_output_dir(output_dir, overwrite)
    names = metric_names(proto, metrics)
    check_protocol_needs(proto, benchmarks, names)
    t0 = time.perf_counter()
    datasets = [open_benchmark(name, root, proto, allow_unpaired) for name, root in benchmarks] \
        + open_lists(lists, list_root, proto)
    if not datasets:
        raise ConfigError("nothing to evaluate: give benchmarks or a --list file")
    scorer = IqaScorer(names, restorer.device) if iqa_names(names) else None
    if output_dir is not None:
        prepare_output_dir(output_dir, overwrite, log)
    rows: List[Dict[str, object]] = []
    per_bench: Dict[str, Dict[str, object]] = {}
    gallery = CropGallery() if output_dir is not None else None
    for ds in datasets:
        if ds.benchmark.name in per_bench:
            raise ConfigError(f"benchmark {ds.benchmark.name} given twice (as a folder and in a list, or in two lists)")
        images_dir = os.path.join(output_dir, "images") if (save_images and output_dir is not None) else None
        bench_rows, set_scores = _evaluate_benchmark(restorer, ds, proto, batch_size, overlap, tile, workers,
                                                     progress, images_dir, names, scorer, gallery, max_images)
        per_bench[ds.benchmark.name] = _summarise_benchmark(ds, proto, bench_rows, names, set_scores, scorer)
        if max_images is not None and len(ds) > max_images:
            per_bench[ds.benchmark.name]["limited_to"] = max_images
        rows += bench_rows
        if log:
            _log_benchmark(log, ds, per_bench[ds.benchmark.name])
    summary = {"protocol": proto.name, "caption": proto.caption, "published_tag": proto.published_tag,
               "restorer": restorer.name, "device": str(restorer.device), "precision": restorer.precision,
               "metrics": list(names), "seconds": round(time.perf_counter() - t0, 2), "benchmarks": per_bench}
    if max_images is not None:
        summary["max_images"] = max_images
    summary["run_notes"] = _run_notes(proto, restorer, scorer)
    markdown = render_markdown(summary)
    if output_dir is not None:
        _write_outputs(output_dir, rows, summary, markdown)
        gallery.write(output_dir)
        write_html_report(output_dir)
    return EvalResult(summary, rows, markdown, output_dir)


def open_benchmark(name: str, root: Optional[str], protocol: Protocol,
                   allow_unpaired: bool = False) -> BenchmarkDataset:
    """The benchmark as ``protocol`` reads it (its noise rule and its authors' file readers)."""
    bench = get_benchmark(name)
    return benchmark_dataset(name, root, allow_unpaired=allow_unpaired, **protocol.readers_for(bench.task, bench.name))


def _check_arguments(restorer: Restorer, batch_size: int, overlap: int, tile: Optional[int]) -> None:
    if restorer.input_size is not None and not 0 <= overlap < restorer.input_size:
        raise ConfigError(f"tile overlap must be in [0, {restorer.input_size}) for '{restorer.name}', got {overlap}")
    if batch_size < 1:
        raise ConfigError(f"batch size must be >= 1, got {batch_size}")
    if tile is not None and not 0 <= overlap < tile:
        raise ConfigError(f"tile overlap must be in [0, {tile}), got {overlap}")


def _to_uint8_HW3(x_3HW: torch.Tensor, quantize) -> np.ndarray:
    """8-bit (H, W, 3) as the metrics quantise (``quantize='float32'``: x * 255 in float32, then rounded)."""
    x = x_3HW.detach().float().clamp(0, 1).mul(255.0) if quantize == "float32" else \
        x_3HW.detach().double().clamp(0, 1).mul(255.0)
    return x.round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()


def _run_notes(proto: Protocol, restorer: Restorer, scorer: Optional[IqaScorer]) -> List[str]:
    """Where this run departs from the settings its preset records (precision, pyiqa version)."""
    notes = []
    if proto.precision and restorer.precision != proto.precision:
        notes.append(f"preset {proto.name} evaluates in {proto.precision} (its paper's setting); this run used "
                     f"{restorer.precision}, as asked explicitly")
    if scorer is not None:
        notes.append(f"no-reference metrics: pyiqa {scorer.version}; settings: {proto.nr.describe()}")
        if proto.nr.pyiqa_version and scorer.version != proto.nr.pyiqa_version:
            notes.append(f"pyiqa {scorer.version} here, {proto.nr.pyiqa_version} in the paper's environment: scores "
                         f"can differ between versions")
    return notes


def _score(out: torch.Tensor, gt: torch.Tensor, settings: MetricSettings, names: Sequence[str],
           gt_gray: Sequence[bool] = (), image_names: Sequence[str] = ()) -> Dict[str, List[float]]:
    """Our full-reference metrics (PSNR / SSIM / LPIPS, those in ``names``) per image of a batch under one
    protocol's metric settings. ``gt_gray[i]``: image i's GT file has one channel (the MATLAB scripts then measure
    the output's Y against it as it is)."""
    scores: Dict[str, List[float]] = {}
    if settings.measure == "realblur":
        pairs = [realblur_psnr_ssim(_to_uint8_HW3(o, settings.quantize), _to_uint8_HW3(g, settings.quantize),
                                    name=n) for o, g, n in zip(out, gt, image_names or [""] * len(out))]
        scores.update({"psnr": [p for p, _ in pairs], "ssim": [q for _, q in pairs]})
        return {k: v for k, v in scores.items() if k in names}
    kw = dict(crop_border=settings.crop_border, y_channel=settings.y_channel, luma=settings.luma,
              quantize=settings.quantize)
    if "psnr" in names:
        scores["psnr"] = M.psnr(out, gt, **kw).tolist()
    if "ssim" in names:
        scores["ssim"] = M.ssim(out, gt, ssim_mode=settings.ssim_mode, **kw).tolist()
    for i, gray in enumerate(gt_gray):
        if gray and settings.y_channel and settings.gray_skips_luma:
            one = dict(kw, gray_skips_luma=True)
            if "psnr" in names:
                scores["psnr"][i] = float(M.psnr(out[i:i + 1], gt[i:i + 1, :1], **one)[0])
            if "ssim" in names:
                scores["ssim"][i] = float(M.ssim(out[i:i + 1], gt[i:i + 1, :1], ssim_mode=settings.ssim_mode,
                                                 **one)[0])
    if "lpips" in names:
        scores["lpips"] = M.lpips_distance(out, gt, quantize=settings.quantize).tolist()
    return scores


def _seeded(seed: int, call: Callable[[], torch.Tensor]) -> torch.Tensor:
    """``call()`` right after ``torch.manual_seed(seed)`` (the CPU generator and every CUDA one); the global
    generator's state is restored afterwards, so an evaluation does not reseed its caller."""
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        return call()
    finally:
        torch.random.set_rng_state(state)


def _file_stem(name: str) -> str:
    return name.replace("/", "_").replace(os.sep, "_")


def _evaluate_benchmark(restorer: Restorer, ds: BenchmarkDataset, proto: Protocol, batch_size: int, overlap: int,
                        tile: Optional[int], workers: int, progress: bool, images_dir: Optional[str],
                        names: Sequence[str], scorer: Optional[IqaScorer], gallery: Optional[CropGallery] = None,
                        max_images: Optional[int] = None):
    """Restore and score every pair of one benchmark (its first ``max_images``): one row per image, and the
    set-level scores (FID)."""
    bench = ds.benchmark
    settings = proto.metrics_for(bench.task, bench.name)
    # AirNet's noise is one stream over the files in order: loading workers would each start their own
    n_workers = 0 if proto.noise_rule == "airnet" and bench.kind == "clean" else workers
    set_dirs = tempfile.TemporaryDirectory(prefix="varformer-fid-") if scorer and scorer.set_metrics else None
    rows: List[Dict[str, object]] = []
    taken = ds if max_images is None or len(ds) <= max_images else torch.utils.data.Subset(ds, range(max_images))
    bar = tqdm(total=len(taken), desc=f"{bench.name} [{proto.name}]", disable=not progress, leave=False)
    for group in _batches(taken, proto, batch_size, n_workers):
        lq = torch.stack([g[0] for g in group]).to(restorer.device)
        gt = torch.stack([g[1] for g in group]).to(restorer.device)
        # a per-image context (e.g. a caption) comes from the LQ as read, before the protocol's resizes
        contexts = [restorer.contexts_of(g[5][None])[0] for g in group] if restorer.image_context else None
        if proto.seed_per_image is None:
            out = run_restorer(restorer, lq, proto, overlap=overlap, tile_batch=batch_size, tile=tile,
                               contexts=contexts)
        else:  # the protocol's seed before each image, one image per call (a batch would share the draws)
            out = torch.cat([_seeded(proto.seed_per_image, lambda i=i: run_restorer(
                restorer, lq[i:i + 1], proto, overlap=overlap, tile_batch=batch_size, tile=tile,
                contexts=contexts[i:i + 1] if contexts is not None else None)) for i in range(lq.shape[0])])
        if bench.name in proto.gt_resize_benchmarks and gt.shape != out.shape:
            gt = torch.stack([resize_to(g, tuple(out.shape[-2:])) for g in gt])
        if gt.shape != out.shape:
            raise DataError(f"{bench.name}/{group[0][2]}: the restored image is {tuple(out.shape[-2:])}, its ground "
                            f"truth {tuple(gt.shape[-2:])} (a x{restorer.scale} restorer on a set of that scale, or "
                            "a protocol that resizes; --scale sets a pre-upsampling restorer's)")
        scores = _score(out, gt, settings, names, [g[4] for g in group], [g[2] for g in group])
        # the report's crops show the LQ at the output size (nearest: its own pixels) beside a super-resolver's
        shown_lq = lq if lq.shape == out.shape else F.interpolate(lq, size=tuple(out.shape[-2:]), mode="nearest")
        if scorer is not None:  # no-reference metrics read the image as the paper stored it
            stored = proto.nr.saving.apply(lq, out, gt, [g[3] for g in group], bench.name)
            scores.update(scorer.per_image(stored))
            if set_dirs is not None:
                for i, g in enumerate(group):
                    stem = _file_stem(g[2]) + ".png"
                    write_image(os.path.join(set_dirs.name, "restored", stem), to_uint8(stored[i], "round"))
                    write_image(os.path.join(set_dirs.name, "reference", stem), to_uint8(gt[i], "round"))
        for i, img_name in enumerate(g[2] for g in group):
            row = {"benchmark": bench.name, "task": bench.task, "name": img_name,
                   "height": int(out.shape[-2]), "width": int(out.shape[-1])}
            row.update({k: v[i] for k, v in scores.items()})
            rows.append(row)
            if gallery is not None:
                gallery.offer(row, shown_lq[i], out[i], gt[i])
            if images_dir is not None:
                write_image(os.path.join(images_dir, bench.name, img_name + ".png"), tensor_to_uint8(out[i]))
        bar.update(len(group))
    bar.close()
    set_scores: Dict[str, Optional[float]] = {}
    if set_dirs is not None:
        with set_dirs:
            set_scores = scorer.per_set(os.path.join(set_dirs.name, "restored"),
                                        os.path.join(set_dirs.name, "reference"), len(rows))
    return rows, set_scores


def _summarise_benchmark(ds: BenchmarkDataset, proto: Protocol, rows: List[Dict[str, object]], names: Sequence[str],
                         set_scores: Dict[str, Optional[float]], scorer: Optional[IqaScorer]) -> Dict[str, object]:
    bench = ds.benchmark
    settings = proto.metrics_for(bench.task, bench.name)
    entry = {"task": bench.task, "images": len(rows), "expected": bench.expected}
    for n in names:
        if n == "psnr":
            entry["psnr"], entry["psnr_infinite"] = _mean_finite([r["psnr"] for r in rows])
        elif n in set_scores:
            entry[n] = set_scores[n]
        elif rows and n in rows[0]:
            entry[n] = float(np.mean([r[n] for r in rows]))
    described = [settings.describe()] if any(n in names for n in ("psnr", "ssim", "lpips")) else []
    if scorer is not None:
        described.append(f"{', '.join(scorer.names)}: pyiqa {scorer.version} on {proto.nr.saving.describe()}")
    entry.update({"folder": ds.located.folder, "pairing": ds.pairing.method, "metrics": "; ".join(described),
                  "notes": list(ds.notes)})
    if scorer is not None and scorer.set_metrics and len(rows) < 2:
        entry["notes"].append(f"{', '.join(scorer.set_metrics)} needs at least two images; not computed")
    return entry


_LOG_FORMAT = {"psnr": ("PSNR", "{:.2f} dB"), "ssim": ("SSIM", "{:.4f}"), "lpips": ("LPIPS", "{:.4f}")}


def _log_benchmark(log: Callable[[str], None], ds: BenchmarkDataset, entry: Dict[str, object]) -> None:
    parts = []
    for key, value in entry.items():
        if key in _LOG_FORMAT or key in IQA_METRICS:
            label, fmt = _LOG_FORMAT.get(key, (key.upper() if key != "clipiqa" else "CLIP-IQA", "{:.4f}"))
            parts.append(f"{label} " + (fmt.format(value) if value is not None else "inf" if key == "psnr" else "–"))
    n_inf = entry.get("psnr_infinite", 0)
    log(f"{ds.benchmark.name}: {entry['images']} images, " + ", ".join(parts)
        + (f" ({n_inf} identical images excluded from the PSNR mean)" if n_inf else ""))
    for note in ds.notes:
        log(f"  note: {note}")


def _write_outputs(output_dir: str, rows: List[Dict[str, object]], summary: Dict[str, object], markdown: str) -> None:
    os.makedirs(output_dir, exist_ok=True)
    measured = list(dict.fromkeys(k for r in rows for k in r))
    fields = ["benchmark", "task", "name", "height", "width"] + [k for k in measured if k not in (
        "benchmark", "task", "name", "height", "width")]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    for r in rows:
        writer.writerow({k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in r.items()})
    write_text_atomic(os.path.join(output_dir, "per_image.csv"), buf.getvalue())
    write_text_atomic(os.path.join(output_dir, "summary.json"), json.dumps(summary, indent=1))
    write_text_atomic(os.path.join(output_dir, "results.md"), markdown)
