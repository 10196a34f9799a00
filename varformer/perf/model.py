"""Speed, FLOPs and memory of the whole VarFormer restorer (``varformer benchmark model``).

For each precision: latency per 256x256 image at batch 1, throughput at a larger batch, peak memory at batch 1,
FLOPs per image (``torch.utils.flop_counter``), the achieved GFLOP/s next to a large matmul timed in the same run
(the practical roofline), and the share of time in the model's parts, read from the ``record_function`` ranges
the model marks them with (``varformer.model.varformer.PARTS``) in one profiled call. The reference is the
official-style path of ``varformer.perf.reference``. Optionally (``image_hw``) an image of any size (e.g.
2160x3840) is restored end to end through the tiling the restore command uses, and timed with its peak memory.

Every timed call goes through ``varformer.inference.model_restorer``: bf16 is measured as ``varformer restore
--precision bf16`` runs it (a copy holding its bf16-eligible weights in bf16, convolutions channels-last); fp32
and the reference use the float32 model the copy was made from.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import torch

from varformer.data.benchmark_data import benchmark_dataset
from varformer.data.catalog import demo_benchmarks
from varformer.data.image_io import tensor_to_uint8
from varformer.inference import Restorer, count_tiles, model_restorer, tiled_forward
from varformer.metrics import psnr
from varformer.model import VarFormerSettings, build_varformer, load_varformer
from varformer.model.varformer import (PART_ENCODE, PART_UNET_DECODER, PART_UNET_ENCODER, PART_VAR_LOOP,
                                       PART_VQ_DECODER)
from varformer.perf.bounds import REST as BOUNDS_REST
from varformer.perf.bounds import copy_bandwidth, part_costs
from varformer.perf.measure import (Machine, Timing, current_memory, interleaved_timings, matmul_roofline,
                                    peak_tensor_bytes, random_images, range_seconds, tensor_bytes)
from varformer.perf.reference import IMAGE_SIZE, flops_without_compute, official_style_forward
from varformer.runtime import resolve_device

PART_LABELS = {PART_ENCODE: "VQVAE encoder + adapter + quantise", PART_VAR_LOOP: "VAR scale loop",
               PART_UNET_ENCODER: "U-Net encoder", PART_VQ_DECODER: "VQVAE decoder features",
               PART_UNET_DECODER: "U-Net decoder"}
REST = "glue (input checks, residual blend, clamp)"
PARTS = tuple(PART_LABELS.values()) + (REST,)


@dataclass
class ModelBenchmarkOptions:
    depth: int = 16                            # VAR depth (16: the released model)
    vae_ch: int = 160                          # VQVAE / U-Net width (32 for a quick run)
    n_cross: Optional[int] = None              # cross-attention blocks (None: depth // 2, the released layout)
    weights: Optional[str] = None              # a checkpoint (None: random weights; timings do not depend on them)
    device: str = "auto"
    precisions: Tuple[str, ...] = ("fp32", "bf16")
    batch: int = 4                             # throughput batch (1: skip the throughput measurement)
    warmup: int = 1
    repeat: int = 2
    reference: bool = True                     # also time the official-style reference path
    bf16_check: bool = False                   # PSNR of bf16 vs fp32 outputs over the demo test set
    bf16_check_images_per_task: Optional[int] = None
    image_hw: Optional[Tuple[int, int]] = None  # also restore one image of this size end to end
    tile_overlap: int = 32
    tile_batch: int = 4
    full_size_flops: bool = False              # also count the full-size model's FLOPs without computing
    bf16_transformer: bool = False             # with bf16: the VAR scale loop in bf16 too

    def validate(self) -> "ModelBenchmarkOptions":
        for p in self.precisions:
            if p not in ("fp32", "bf16"):
                raise ValueError(f"unknown precision {p!r}; choose fp32 or bf16")
        if self.repeat < 1 or self.warmup < 0 or self.batch < 1:
            raise ValueError("need repeat >= 1, warmup >= 0, batch >= 1")
        if self.bf16_check and set(self.precisions) != {"fp32", "bf16"}:
            raise ValueError("the bf16 check compares fp32 and bf16 outputs: run it with --precision fp32 bf16")
        return self


@dataclass
class PrecisionResult:
    precision: str
    b1: Timing
    throughput_ips: Optional[float]       # images/s at the larger batch (wall)
    throughput_cpu_s_per_img: Optional[float]
    matmul_gflops: float                  # per wall second
    matmul_cpu_gflops: float              # per CPU second
    part_shares: Dict[str, float] = field(default_factory=dict)
    # per part: seconds (share of the batch-1 wall time), GFLOP, GB moved, and the bound they set
    part_bounds: Dict[str, Dict[str, float]] = field(default_factory=dict)


@dataclass
class ModelBenchmark:
    config: Dict[str, object]
    machine: Machine
    weights_note: str
    params: int
    flops_per_image: int
    model_memory_bytes: Optional[int]
    batch: int
    results: List[PrecisionResult]
    reference: Optional[Dict[str, object]] = None
    bf16_check: Optional[Dict[str, float]] = None
    large_image: Optional[Dict[str, object]] = None
    full_size_flops: Optional[Dict[str, int]] = None
    # batch-1 peak of weights + live activations per call ("fp32", "bf16", "reference"): what CUDA's
    # max_memory_allocated reports; on CPU tracked op by op in one extra call (the process RSS adds the runtime)
    tensor_peaks: Dict[str, int] = field(default_factory=dict)
    copy_gbytes_per_s: Optional[float] = None   # the memory roofline of the part bounds


def default_n_cross(depth: int) -> int:
    """The released (test) layout: one cross-attention block per two VAR blocks (official ``div_part`` 2)."""
    return max(1, depth // 2)


def build_model(opts: ModelBenchmarkOptions, device: torch.device):
    """(float32 model in eval mode, note). Random weights unless ``opts.weights``: timings and FLOPs do not depend
    on the values."""
    if opts.weights:
        return load_varformer(opts.weights).to(device).eval(), f"weights: {opts.weights}"
    torch.manual_seed(0)
    n_cross = default_n_cross(opts.depth) if opts.n_cross is None else opts.n_cross
    model = build_varformer(VarFormerSettings(depth=opts.depth, vae_ch=opts.vae_ch, n_cross=n_cross))
    return model.to(device).eval(), "random weights (timings and FLOPs do not depend on them; outputs are meaningless)"


def part_bounds(restorer: Restorer, x: torch.Tensor, seconds: float, shares: Dict[str, float],
                flops_per_s: Dict[torch.dtype, float], bytes_per_s: float) -> Dict[str, Dict[str, float]]:
    """Per part: its seconds (``shares`` of ``seconds``), FLOPs and bytes counted op by op, the compute and memory
    times at the measured matmul rate of each op's dtype and the copy rate, the bound (the larger) and how far the
    part runs above it."""
    costs = part_costs(lambda: restorer(x), list(PART_LABELS))
    out = {}
    for name, label in list(PART_LABELS.items()) + [(BOUNDS_REST, REST)]:
        c = costs[name]
        t = shares.get(label, 0.0) * seconds
        bound = c.bound_s(flops_per_s, bytes_per_s)
        out[label] = {"seconds": t, "gflop": c.flops / 1e9, "gbytes": c.bytes / 1e9,
                      "gflop_bf16": c.flops_by_dtype.get(torch.bfloat16, 0) / 1e9,
                      "compute_s": c.compute_s(flops_per_s), "memory_s": c.memory_s(bytes_per_s),
                      "bound_s": bound, "ratio": t / bound if bound > 0 else float("nan")}
    return out


def part_shares(restorer: Restorer, x: torch.Tensor, calls: int = 2) -> Dict[str, float]:
    """Fractions of one call's time in each part of the model (``PARTS``; the rest is glue), from the fastest of
    ``calls`` profiled calls (one call can be slowed by something else on the machine)."""
    seconds = min((range_seconds(lambda: restorer(x), list(PART_LABELS), restorer.device) for _ in range(calls)),
                  key=lambda s: s["total"])
    total = max(seconds.pop("total"), 1e-12)
    shares = {PART_LABELS[k]: v / total for k, v in seconds.items()}
    shares[REST] = max(1.0 - sum(shares.values()), 0.0)
    return shares


# ---------------------------------------------------------------------------------------------------------------
# The steps of a run
# ---------------------------------------------------------------------------------------------------------------
def _prepare_models(opts: ModelBenchmarkOptions, dev: torch.device, log):
    """{precision: model} (bf16: a prepared copy, or the model itself when nothing else needs float32), the float32
    model (None if it was converted), a note, the resident bytes the models added."""
    mem_before = current_memory(dev)
    model, note = build_model(opts, dev)
    if opts.bf16_transformer:
        model.bf16_transformer = True
        note += "; VAR loop in bf16 under bf16"
    models = {p: model for p in opts.precisions}
    if "bf16" in opts.precisions:
        keep_fp32 = "fp32" in opts.precisions or opts.reference
        models["bf16"] = (copy.deepcopy(model) if keep_fp32 else model).prepare_inference("bf16")
        note += "; bf16: weights held in bf16 where autocast allows, convolutions channels-last (prepare_inference)"
        model = model if keep_fp32 else None
    model_mem = current_memory(dev) - mem_before if mem_before else None
    log(f"model {models[opts.precisions[0]].settings()} on {dev}; {note}")
    return models, model, note, model_mem


def _tensor_peaks(models, fp32_model, b1: Dict[str, Timing], restorers, x1, dev, log) -> Dict[str, int]:
    """Batch-1 peak of weights + live activations per call: CUDA's allocator peak minus the models the call did not
    use; on CPU one tracked call each (the process RSS would add the runtime)."""
    held = {p: tensor_bytes([m]) for p, m in models.items()}
    if "reference" in b1:
        held["reference"] = tensor_bytes([fp32_model])
    if dev.type == "cuda":
        resident = tensor_bytes(list({id(m): m for m in [*models.values(), fp32_model] if m is not None}.values()))
        return {k: t.peak_mem_bytes - (resident - held[k]) for k, t in b1.items() if t.peak_mem_bytes is not None}
    log("batch 1: peak tensor memory, one tracked call each")
    calls = {p: (lambda r=r: r(x1)) for p, r in restorers.items()}
    if "reference" in b1:
        calls["reference"] = lambda: official_style_forward(fp32_model, x1)
    return {k: held[k] + peak_tensor_bytes(fn) for k, fn in calls.items()}


def run_model_benchmark(opts: ModelBenchmarkOptions = ModelBenchmarkOptions(),
                        log: Callable[[str], None] = lambda m: None) -> ModelBenchmark:
    opts.validate()
    dev = resolve_device(opts.device)
    models, fp32_model, note, model_mem = _prepare_models(opts, dev, log)
    settings = models[opts.precisions[0]].settings()
    restorers = {p: model_restorer(models[p], dev, p) for p in opts.precisions}
    x1, xb = random_images(1, IMAGE_SIZE, dev), random_images(opts.batch, IMAGE_SIZE, dev, seed=1)
    log("FLOPs per image (counted on fake tensors: nothing computed)")
    counted = flops_without_compute(settings)

    outputs: Dict[str, torch.Tensor] = {}
    fns = {p: (lambda p=p: outputs.__setitem__(p, restorers[p](x1))) for p in opts.precisions}
    use_ref = opts.reference and fp32_model is not None and "reference" in counted
    if use_ref:
        fns["reference"] = lambda: outputs.__setitem__("reference", official_style_forward(fp32_model, x1))
    log(f"batch 1: {', '.join(fns)} in alternation, {opts.warmup} warm-up + {opts.repeat} timed rounds")
    b1 = interleaved_timings(fns, dev, opts.warmup, opts.repeat, with_memory=True)
    tensor_peaks = _tensor_peaks(models, fp32_model, b1, restorers, x1, dev, log)
    thr: Dict[str, Timing] = {}
    if opts.batch > 1:
        log(f"batch {opts.batch}: {', '.join(opts.precisions)} in alternation, {opts.repeat} timed rounds")
        thr = interleaved_timings({p: (lambda p=p: restorers[p](xb)) for p in opts.precisions}, dev, 0, opts.repeat,
                                  with_memory=False)
    results = []
    bandwidth = copy_bandwidth(dev)
    log(f"memory roofline: copy {bandwidth / 1e9:.1f} GB/s")
    # each op's FLOPs are held to the rate of its dtype: a bf16 run keeps the tokenizer (and the VAR loop by default)
    # in float32, and the float32 rate is their bound there too
    log("matmul rooflines: " + ", ".join(sorted({"fp32" if p == "fp32" else "bf16" for p in opts.precisions})))
    roofs = {dt: matmul_roofline(dev, dt) for dt in
             {torch.float32} | ({torch.bfloat16} if any(p != "fp32" for p in opts.precisions) else set())}
    rates = {dt: r.wall_gflops * 1e9 for dt, r in roofs.items()}
    for p in opts.precisions:
        log(f"[{p}] part shares and part bounds")
        roof = roofs[torch.float32 if p == "fp32" else torch.bfloat16]
        t = thr.get(p)
        shares = part_shares(restorers[p], x1)
        bounds = part_bounds(restorers[p], x1, b1[p].wall_s, shares, rates, bandwidth)
        results.append(PrecisionResult(p, b1[p], opts.batch / t.wall_s if t else None,
                                       t.cpu_s / opts.batch if t else None, roof.wall_gflops, roof.cpu_gflops,
                                       shares, bounds))
    ref = None
    if use_ref:
        diff = float((outputs["reference"] - outputs["fp32"]).abs().max()) if "fp32" in outputs else None
        ref = {"b1": b1["reference"], "flops_per_image": counted["reference"], "max_abs_diff_vs_model_fp32": diff}
    return ModelBenchmark(
        config=settings.to_metadata(), machine=Machine.here(dev), weights_note=note,
        params=sum(p.numel() for p in models[opts.precisions[0]].parameters()), flops_per_image=counted["model"],
        model_memory_bytes=model_mem, batch=opts.batch, results=results, reference=ref,
        copy_gbytes_per_s=bandwidth / 1e9,
        bf16_check=bf16_psnr_check(restorers, opts.bf16_check_images_per_task, log) if opts.bf16_check else None,
        large_image=(benchmark_large_image(restorers[opts.precisions[-1]], opts.image_hw, opts.tile_overlap,
                                           opts.tile_batch, log) if opts.image_hw else None),
        full_size_flops=_full_size_flops(log) if opts.full_size_flops else None, tensor_peaks=tensor_peaks)


def _full_size_flops(log) -> Dict[str, int]:
    log("FLOPs of the full-size model (depth 16, vae_ch 160) without computing")
    return flops_without_compute(VarFormerSettings(depth=16, vae_ch=160, n_cross=default_n_cross(16)))


def bf16_psnr_check(restorers: Dict[str, Restorer], images_per_task: Optional[int] = None,
                    log: Callable[[str], None] = lambda m: None) -> Dict[str, float]:
    """Mean PSNR (dB, RGB, 8-bit outputs) over the demo test benchmarks of the ``fp32`` and ``bf16`` restorers'
    outputs (the same weights; the bf16 one may hold them in bf16), tiled at full size (all of its images, or the
    first ``images_per_task`` of every task)."""
    pairs = []
    for name in demo_benchmarks():
        ds = benchmark_dataset(name)
        pairs += [ds[i] for i in range(min(len(ds), images_per_task or len(ds)))]
    scores: Dict[str, List[float]] = {"fp32": [], "bf16": []}
    agree: List[float] = []
    for i, item in enumerate(pairs):
        gt = tensor_to_uint8(item["gt"])
        outs = {}
        for p in ("fp32", "bf16"):
            y = tiled_forward(restorers[p], item["lq"][None], tile=IMAGE_SIZE, overlap=32, batch_size=4)
            outs[p] = tensor_to_uint8(y[0])
            scores[p].append(float(psnr(outs[p], gt)))
        agree.append(float(psnr(outs["bf16"], outs["fp32"])))
        log(f"[bf16 check] {i + 1}/{len(pairs)}")
    m32, m16 = float(np.mean(scores["fp32"])), float(np.mean(scores["bf16"]))
    return {"images": len(pairs), "psnr_fp32_db": m32, "psnr_bf16_db": m16, "delta_db": m16 - m32,
            "psnr_bf16_vs_fp32_db": float(np.mean(agree))}


def benchmark_large_image(restorer: Restorer, image_hw: Tuple[int, int], overlap: int = 32, batch: int = 4,
                          log: Callable[[str], None] = lambda m: None) -> Dict[str, object]:
    """Restore one random image of ``image_hw`` end to end (padding, tiles, blending) once; time and peak memory."""
    H, W = image_hw
    x = torch.rand(1, 3, H, W, generator=torch.Generator().manual_seed(2)).to(restorer.device)
    n_tiles = count_tiles(H, W, IMAGE_SIZE, overlap)
    log(f"[{H}x{W}] {n_tiles} tiles, {restorer.precision}, tile batch {batch}")
    t = interleaved_timings({"image": lambda: tiled_forward(restorer, x, tile=IMAGE_SIZE, overlap=overlap,
                                                            batch_size=batch)}, restorer.device, 0, 1)["image"]
    return {"hw": (H, W), "tiles": n_tiles, "precision": restorer.precision, "tile_batch": batch,
            "seconds": t.wall_s, "cpu_seconds": t.cpu_s, "seconds_per_tile": t.wall_s / n_tiles,
            "peak_mem_bytes": t.peak_mem_bytes}
