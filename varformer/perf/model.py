"""Speed, FLOPs and memory of any registered method's whole model (``varformer benchmark model --method NAME ...``),
through its ``MethodSpec.benchmark`` (``varformer.methods.api.BenchmarkEntry``), several methods from one run.

Per method: the released settings (``--set key=value`` changes them, ``varformer.perf.overrides``) on random
weights, or a model file (``weights``: any method's, read by ``registry.inspect_weights`` and its ``load_model``).
For each precision: latency per input at batch 1, throughput at a larger batch, peak tensor memory at batch 1,
FLOPs per input counted on fake tensors (this package's own op counter, ``perf.measure``; nothing computed, also
split over the entry's module groups), the achieved GFLOP/s next to a large matmul timed in the same run (the
practical roofline), the share of time in the parts the model marks with ``record_function`` ranges (the entry's
``parts``, one profiled call) and what bounds each part (``perf.bounds``). An entry's ``reference`` (an
official-style way to run the same model) is timed beside it, its FLOPs counted and its output compared. The
seconds and FLOPs of a 512x512 image follow from the method's ``RestorerTraits`` (``per_512``).

The forward is timed as ``varformer restore`` runs it: the model of ``inference.model_restorer`` for the precision
(bf16: a copy holding its bf16-eligible weights in bf16 where the model offers ``prepare_inference``) called on the
entry's inputs under ``inference_mode`` and ``runtime.autocast``. Optionally an image of any size (``image_hw``) is
restored end to end as the evaluator runs it (tiles, padding), and bf16 and fp32 outputs are compared on the demo
test set (``bf16_check``); both need a forward that takes an image only. Every process-wide setting the run changes
(threads, TF32, the random state) is restored afterwards (``perf.measure.process_settings``).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from varformer.config import EvalConfig
from varformer.data.benchmark_data import benchmark_dataset
from varformer.data.catalog import demo_benchmarks
from varformer.data.image_io import tensor_to_uint8
from varformer.errors import ConfigError
from varformer.evaluation.evaluate import run_restorer
from varformer.evaluation.protocols import get_protocol
from varformer.inference import Restorer, count_tiles, model_restorer
from varformer.methods import registry
from varformer.methods.api import MethodSpec, RestorerTraits, WeightsFile
from varformer.metrics import psnr
from varformer.perf.bounds import REST as BOUNDS_REST
from varformer.perf.bounds import copy_bandwidth, part_costs
from varformer.perf.measure import (Machine, Timing, count_flops, current_memory, flops_by_group, interleaved_timings,
                                    matmul_roofline, params_by_group, peak_tensor_bytes, process_settings,
                                    range_seconds, tensor_bytes)
from varformer.perf.overrides import released_settings, split_overrides
from varformer.runtime import autocast, resolve_device

GLUE = "glue (outside the parts)"
TARGET = 512     # the side of the image the side-by-side table prices every method at
ALL = "all"      # --method all: every registered method with a benchmark entry


@dataclass
class ModelBenchmarkOptions:
    methods: Tuple[str, ...] = ()              # registered names, or "all" (empty: the registry's default method)
    overrides: Tuple[str, ...] = ()            # "key=value" / "NAME.key=value": changes of the released settings
    switches: Tuple[str, ...] = ()             # BenchmarkSwitch names of the methods' entries
    weights: Optional[str] = None              # a model file of any method (None: random weights)
    device: str = "auto"
    precisions: Tuple[str, ...] = ("fp32", "bf16")
    batch: int = 4                             # throughput batch (1: skip the throughput measurement)
    warmup: int = 1
    repeat: int = 2
    reference: bool = True                     # also time the entry's reference path, where it has one
    bounds: bool = True                        # FLOPs and bytes per part against the rooflines
    bf16_check: bool = False                   # PSNR of bf16 vs fp32 outputs over the demo test set
    bf16_check_images_per_task: Optional[int] = None
    image_hw: Optional[Tuple[int, int]] = None  # also restore one image of this size end to end
    tile_overlap: int = EvalConfig().overlap   # the evaluator's (and restore's) tile overlap
    tile_batch: int = 4
    full_size_flops: bool = False              # also count the released size's FLOPs without computing
    threads: Optional[int] = None              # torch CPU threads for the run (restored afterwards)
    matmul_n: int = 2048                       # side of the roofline's matmul

    def validate(self) -> "ModelBenchmarkOptions":
        for p in self.precisions:
            if p not in ("fp32", "bf16"):
                raise ValueError(f"unknown precision {p!r}; choose fp32 or bf16")
        if self.repeat < 1 or self.warmup < 0 or self.batch < 1:
            raise ValueError("need repeat >= 1, warmup >= 0, batch >= 1")
        if self.bf16_check and set(self.precisions) != {"fp32", "bf16"}:
            raise ValueError("the bf16 check compares fp32 and bf16 outputs: run it with --precision fp32 bf16")
        if self.weights and self.overrides:
            raise ConfigError("--set changes the released settings; a --weights file brings its own")
        return self


@dataclass
class PrecisionResult:
    precision: str
    b1: Timing
    throughput_ips: Optional[float]       # inputs/s at the larger batch (wall)
    throughput_cpu_s_per_img: Optional[float]
    matmul_gflops: float                  # per wall second
    matmul_cpu_gflops: float              # per CPU second
    part_shares: Dict[str, float] = field(default_factory=dict)
    # per part: seconds (share of the batch-1 wall time), GFLOP, GB moved, and the bound they set
    part_bounds: Dict[str, Dict[str, float]] = field(default_factory=dict)


@dataclass
class Per512:
    """What a 512x512 image costs in model calls of the measured input (``per_512``)."""
    inputs: float        # model calls per 512x512 image (tiles, or a pixel-count ratio)
    exact: bool          # False: scaled from another input size by the pixel count (any-size models)
    note: str


@dataclass
class MethodBenchmark:
    method: str
    title: str
    description: str                      # the method's describe(settings)
    config: Dict[str, object]             # the settings benchmarked (as a model file records them)
    weights_note: str
    input_shapes: List[Tuple[int, ...]]   # the forward's tensor inputs at batch 1
    params: int
    flops_per_input: int
    flop_groups: Dict[str, int]
    param_groups: Dict[str, int]
    model_memory_bytes: Optional[int]
    batch: int
    results: List[PrecisionResult]
    per_512: Per512
    parts: List[str] = field(default_factory=list)        # the part labels of the share tables, glue last
    reference: Optional[Dict[str, object]] = None
    bf16_check: Optional[Dict[str, float]] = None
    large_image: Optional[Dict[str, object]] = None
    full_size: Optional[Dict[str, object]] = None
    # batch-1 peak of weights + live activations per call (precision or "reference"): what CUDA's
    # max_memory_allocated reports; on CPU tracked op by op in one extra call (the process RSS adds the runtime)
    tensor_peaks: Dict[str, int] = field(default_factory=dict)


@dataclass
class ModelBenchmark:
    machine: Machine
    methods: List[MethodBenchmark]
    overlap: int
    copy_gbytes_per_s: Optional[float] = None   # the memory roofline of the part bounds


# ---------------------------------------------------------------------------------------------------------------
# Pieces
# ---------------------------------------------------------------------------------------------------------------
def benchmark_specs(names: Tuple[str, ...]) -> List[MethodSpec]:
    """The specs ``--method`` names (``all``: every method with a benchmark entry; none: the default method)."""
    if ALL in names:
        specs = [s for s in registry.methods().values() if s.benchmark is not None]
    else:
        specs = [registry.get(n) for n in dict.fromkeys(names or (registry.DEFAULT,))]
    missing = [s.name for s in specs if s.benchmark is None]
    if missing:
        raise ConfigError(f"method {', '.join(missing)} registers no benchmark entry (MethodSpec.benchmark)")
    return specs


def flops_without_compute(spec: MethodSpec, settings) -> Dict[str, object]:
    """FLOPs of one input through ``spec``'s model (by module group, and of the entry's reference where it applies)
    and its parameters, without computing anything: the model is built on the meta device, given uninitialised CPU
    storage (never touched, so no memory is used) and run on the entry's inputs under a fake-tensor mode. Seconds
    at full size on any machine."""
    entry = spec.benchmark
    with torch.device("meta"):
        m = spec.build(settings)
    m = m.to_empty(device="cpu").eval()
    out: Dict[str, object] = {"params": sum(p.numel() for p in m.parameters()),
                              "param_groups": params_by_group(m, entry.flop_groups, entry.flop_rest)}
    with FakeTensorMode(allow_non_fake_inputs=True):
        args = entry.inputs(settings, 1, torch.device("cpu"))
        out["flops"], out["flop_groups"] = flops_by_group(m, entry.flop_groups, entry.flop_rest, *args)
        if entry.reference is not None and entry.reference.applies(settings):
            out["reference"] = count_flops(entry.reference.forward, m, *args)
    return out


def per_512(traits: RestorerTraits, measured: int, overlap: int) -> Per512:
    """Model calls per 512x512 image: tiles of a fixed input size at the evaluator's overlap, one call for a model
    that resizes every image to its input, or a pixel-count ratio for an any-size model measured at another size;
    with a scale > 1, the input that gives a 512x512 output."""
    side = max(1, round(TARGET / traits.scale))
    sr = (f"; x{traits.scale}: a {side}x{side} input gives the {TARGET}x{TARGET} output" if traits.scale > 1 else "")
    net = TARGET if traits.upsample else side     # a pre-upsampling model runs at the output's resolution
    if traits.upsample and traits.scale > 1:
        sr += f", upsampled ({traits.upsample}) before the network"
    if traits.input_size and traits.resize_to_input:
        s = traits.input_size
        return Per512(1, True, f"one call: the image resized to {s}x{s} as its papers run it" + sr)
    if traits.input_size:
        s = traits.input_size
        ov = traits.tile_overlap if traits.tile_overlap is not None else overlap   # as inference.images tiles
        n = count_tiles(net, net, s, ov)
        tiles = "1 tile" if n == 1 else f"{n} tiles"
        return Per512(n, True, f"{tiles} of {s}x{s} at overlap {ov} (as evaluate and restore tile it), "
                               "its batch-1 figures x the tile count" + sr)
    exact = measured == net
    return Per512((net / measured) ** 2, exact, f"one {net}x{net} call" + sr + (
        "" if exact else f"; measured at {measured}x{measured}, scaled by the pixel count (approx.)"))


def _forward(r: Restorer, args: tuple) -> Callable[[], object]:
    """The model of restorer ``r`` on ``args`` as ``r`` runs it (inference mode, its precision's autocast)."""
    def run():
        with torch.inference_mode(), autocast(r.device, r.precision):
            return r.model(*args)
    return run


def part_shares(fn: Callable[[], object], parts: List[str], labels: List[str], device: torch.device,
                calls: int = 2) -> Dict[str, float]:
    """Fractions of one call's time in each part (``labels[i]`` for range ``parts[i]``; the rest is ``GLUE``), from
    the fastest of ``calls`` profiled calls (one call can be slowed by something else on the machine)."""
    seconds = min((range_seconds(fn, parts, device) for _ in range(max(calls, 1))), key=lambda s: s["total"])
    total = max(seconds.pop("total"), 1e-12)
    shares = {label: seconds[part] / total for part, label in zip(parts, labels)}
    shares[GLUE] = max(1.0 - sum(shares.values()), 0.0)
    return shares


def part_bounds(fn: Callable[[], object], parts: List[str], labels: List[str], seconds: float,
                shares: Dict[str, float], flops_per_s: Dict[torch.dtype, float],
                bytes_per_s: float) -> Dict[str, Dict[str, float]]:
    """Per part: its seconds (``shares`` of ``seconds``), FLOPs and bytes counted op by op, the compute and memory
    times at the measured matmul rate of each op's dtype and the copy rate, the bound (the larger) and how far the
    part runs above it."""
    costs = part_costs(fn, parts)
    out = {}
    for name, label in list(zip(parts, labels)) + [(BOUNDS_REST, GLUE)]:
        c = costs[name]
        t = shares.get(label, 0.0) * seconds
        bound = c.bound_s(flops_per_s, bytes_per_s)
        out[label] = {"seconds": t, "gflop": c.flops / 1e9, "gbytes": c.bytes / 1e9,
                      "gflop_bf16": c.flops_by_dtype.get(torch.bfloat16, 0) / 1e9,
                      "compute_s": c.compute_s(flops_per_s), "memory_s": c.memory_s(bytes_per_s),
                      "bound_s": bound, "ratio": t / bound if bound > 0 else float("nan")}
    return out


@dataclass
class _Prepared:
    restorers: Dict[str, Restorer]      # per precision
    fp32_model: Optional[torch.nn.Module]   # the float32 model (None when it was converted for bf16)
    settings: object
    note: str
    memory: Optional[int]


def _prepare(spec: MethodSpec, settings, opts: ModelBenchmarkOptions, dev: torch.device, log,
             weights: Optional[WeightsFile] = None) -> _Prepared:
    """The model (random weights, or the file ``weights`` read once), its switches applied, and a restorer per
    precision (bf16: a prepared copy, or the model itself when nothing else needs float32)."""
    mem_before = current_memory(dev)
    torch.manual_seed(0)
    if weights is not None:
        model, note = spec.load_model(weights), f"weights: {weights.path}"
        settings = model.settings() if callable(getattr(model, "settings", None)) else settings
    else:
        model = spec.build(settings)
        note = "random weights (timings and FLOPs do not depend on them; outputs are meaningless)"
    model = model.to(dev).eval()
    for switch in spec.benchmark.switches:
        if switch.name in opts.switches:
            note += "; " + switch.apply(model)
    traits = spec.restorer(model)
    ref = spec.benchmark.reference
    keep_fp32 = "fp32" in opts.precisions or (opts.reference and ref is not None and ref.applies(settings))
    restorers = {}
    for p in opts.precisions:
        m = copy.deepcopy(model) if p == "bf16" and keep_fp32 else model
        restorers[p] = model_restorer(m, dev, p, traits=traits)
    if "bf16" in opts.precisions:
        note += ("; bf16: a copy holding its bf16-eligible weights in bf16 (prepare_inference), as restore runs it"
                 if hasattr(model, "prepare_inference") else "; bf16: under bf16 autocast")
    model_mem = current_memory(dev) - mem_before if mem_before else None
    log(f"{spec.name}: {spec.describe(settings)} on {dev}; {note}")
    return _Prepared(restorers, model if keep_fp32 else None, settings, note, model_mem)


def _tensor_peaks(prep: _Prepared, b1: Dict[str, Timing], calls: Dict[str, Callable], dev, log) -> Dict[str, int]:
    """Batch-1 peak of weights + live activations per call: CUDA's allocator peak minus the models the call did not
    use; on CPU one tracked call each (the process RSS would add the runtime)."""
    models = {p: r.model for p, r in prep.restorers.items()}
    if "reference" in calls:
        models["reference"] = prep.fp32_model
    held = {k: tensor_bytes([m]) for k, m in models.items()}
    if dev.type == "cuda":
        resident = tensor_bytes(list({id(m): m for m in models.values()}.values()))
        return {k: t.peak_mem_bytes - (resident - held[k]) for k, t in b1.items() if t.peak_mem_bytes is not None}
    log("batch 1: peak tensor memory, one tracked call each")
    return {k: held[k] + peak_tensor_bytes(fn) for k, fn in calls.items()}


# ---------------------------------------------------------------------------------------------------------------
# A run
# ---------------------------------------------------------------------------------------------------------------
def run_model_benchmark(opts: ModelBenchmarkOptions = ModelBenchmarkOptions(),
                        log: Callable[[str], None] = lambda m: None) -> ModelBenchmark:
    opts.validate()
    names, info = opts.methods, None
    if opts.weights:
        info = registry.inspect_weights(opts.weights)
        if info.method is None:
            raise ConfigError(f"--weights {opts.weights} is {info.describe()}; the benchmark takes a model file of "
                              f"one of the methods here ({', '.join(registry.names())})")
        if names and list(dict.fromkeys(names)) != [info.method.name]:
            raise ConfigError(f"--weights {opts.weights} is a {info.method.name} file: it names one model; drop "
                              f"--method or give --method {info.method.name}")
        names = (info.method.name,)
    specs = benchmark_specs(names)
    known = {s.name for spec in specs for s in spec.benchmark.switches}
    unknown = sorted(set(opts.switches) - known)
    if unknown:
        raise ConfigError(f"--switch {', '.join(unknown)}: not a switch of {', '.join(s.name for s in specs)} "
                          f"(theirs: {', '.join(sorted(known)) or 'none'})")
    overrides = split_overrides(opts.overrides, specs)
    settings = {s.name: released_settings(s, overrides[s.name]) for s in specs}   # every error before any work
    dev = resolve_device(opts.device)
    with process_settings(threads=opts.threads, allow_tf32=False):   # fp32 means fp32; all restored afterwards
        bandwidth = copy_bandwidth(dev) if opts.bounds else None
        if bandwidth:
            log(f"memory roofline: copy {bandwidth / 1e9:.1f} GB/s")
        log("matmul rooflines: " + ", ".join(opts.precisions))
        roofs = {p: matmul_roofline(dev, torch.float32 if p == "fp32" else torch.bfloat16, n=opts.matmul_n)
                 for p in opts.precisions}
        results = [_run_method(spec, settings[spec.name], opts, dev, roofs, bandwidth, log, info) for spec in specs]
        machine = Machine.here(dev)
    return ModelBenchmark(machine, results, opts.tile_overlap, bandwidth / 1e9 if bandwidth else None)


def _run_method(spec: MethodSpec, settings, opts: ModelBenchmarkOptions, dev: torch.device, roofs, bandwidth,
                log, weights: Optional[WeightsFile] = None) -> MethodBenchmark:
    entry = spec.benchmark
    prep = _prepare(spec, settings, opts, dev, log, weights)
    settings = prep.settings
    log(f"{spec.name}: FLOPs per input (counted on fake tensors: nothing computed)")
    counted = flops_without_compute(spec, settings)
    torch.manual_seed(0)
    args1 = entry.inputs(settings, 1, dev)
    outputs: Dict[str, object] = {}
    calls = {p: _forward(r, args1) for p, r in prep.restorers.items()}
    if opts.reference and "reference" in counted and prep.fp32_model is not None:
        calls["reference"] = lambda: entry.reference.forward(prep.fp32_model, *args1)
    fns = {k: (lambda k=k: outputs.__setitem__(k, calls[k]())) for k in calls}
    log(f"{spec.name} batch 1: {', '.join(fns)} in alternation, {opts.warmup} warm-up + {opts.repeat} timed rounds")
    b1 = interleaved_timings(fns, dev, opts.warmup, opts.repeat, with_memory=True)
    tensor_peaks = _tensor_peaks(prep, b1, calls, dev, log)
    thr: Dict[str, Timing] = {}
    if opts.batch > 1:
        torch.manual_seed(1)
        argsb = entry.inputs(settings, opts.batch, dev)
        log(f"{spec.name} batch {opts.batch}: {', '.join(opts.precisions)} in alternation, {opts.repeat} rounds")
        thr = interleaved_timings({p: _forward(r, argsb) for p, r in prep.restorers.items()}, dev, 0, opts.repeat,
                                  with_memory=False)
    parts, labels = list(entry.parts), [entry.label_of(p) for p in entry.parts]
    rates = {torch.float32 if p == "fp32" else torch.bfloat16: r.wall_gflops * 1e9 for p, r in roofs.items()}
    results = []
    for p in opts.precisions:
        t = thr.get(p)
        shares: Dict[str, float] = {}
        bounds: Dict[str, Dict[str, float]] = {}
        if parts:
            log(f"[{spec.name} {p}] part shares" + (" and part bounds" if bandwidth else ""))
            shares = part_shares(calls[p], parts, labels, dev, calls=min(2, opts.repeat))
            if bandwidth:
                bounds = part_bounds(calls[p], parts, labels, b1[p].wall_s, shares, rates, bandwidth)
        results.append(PrecisionResult(p, b1[p], opts.batch / t.wall_s if t else None,
                                       t.cpu_s / opts.batch if t else None, roofs[p].wall_gflops,
                                       roofs[p].cpu_gflops, shares, bounds))
    ref = None
    if "reference" in b1:
        same = isinstance(outputs.get("fp32"), torch.Tensor) and isinstance(outputs["reference"], torch.Tensor)
        diff = float((outputs["reference"].float() - outputs["fp32"].float()).abs().max()) if same else None
        ref = {"label": entry.reference.label, "description": entry.reference.description, "b1": b1["reference"],
               "flops_per_input": counted["reference"], "max_abs_diff_vs_model_fp32": diff}
    image_only = len(args1) == 1
    if (opts.bf16_check or opts.image_hw) and not image_only:
        raise ConfigError(f"--bf16-check and --image restore images: {spec.name}'s forward takes "
                          f"{len(args1)} inputs, not an image only")
    size = entry.input_size(settings)
    full = None
    if opts.full_size_flops:
        log(f"{spec.name}: FLOPs of the released size without computing")
        released = released_settings(spec)
        full = dict(flops_without_compute(spec, released), description=spec.describe(released),
                    note=entry.released_note)
    return MethodBenchmark(
        method=spec.name, title=spec.title, description=spec.describe(settings),
        config=settings.to_metadata() if hasattr(settings, "to_metadata") else dict(vars(settings)),
        weights_note=prep.note, input_shapes=[tuple(a.shape) for a in args1 if isinstance(a, torch.Tensor)],
        params=counted["params"], flops_per_input=counted["flops"], flop_groups=counted["flop_groups"],
        param_groups=counted["param_groups"], model_memory_bytes=prep.memory, batch=opts.batch, results=results,
        per_512=per_512(spec.restorer(prep.restorers[opts.precisions[0]].model), size, opts.tile_overlap),
        parts=labels + [GLUE] if parts else [], reference=ref,
        bf16_check=bf16_psnr_check(prep.restorers, opts, log) if opts.bf16_check else None,
        large_image=(benchmark_large_image(prep.restorers[opts.precisions[-1]], opts.image_hw, opts.tile_overlap,
                                           opts.tile_batch, log) if opts.image_hw else None),
        full_size=full, tensor_peaks=tensor_peaks)


def bf16_psnr_check(restorers: Dict[str, Restorer], opts: ModelBenchmarkOptions,
                    log: Callable[[str], None] = lambda m: None) -> Dict[str, float]:
    """Mean PSNR (dB, RGB, 8-bit outputs) over the demo test benchmarks of the ``fp32`` and ``bf16`` restorers'
    outputs (the same weights; the bf16 one may hold them in bf16), at native resolution as the ``full`` protocol
    runs them (all of its images, or the first ``bf16_check_images_per_task`` of every task)."""
    protocol, cap = get_protocol("full"), opts.bf16_check_images_per_task
    pairs = []
    for name in demo_benchmarks():
        ds = benchmark_dataset(name)
        pairs += [ds[i] for i in range(min(len(ds), cap or len(ds)))]
    scores: Dict[str, List[float]] = {"fp32": [], "bf16": []}
    agree: List[float] = []
    for i, item in enumerate(pairs):
        gt = tensor_to_uint8(item["gt"])
        outs = {}
        for p in ("fp32", "bf16"):
            y = run_restorer(restorers[p], item["lq"][None], protocol, opts.tile_overlap, opts.tile_batch)
            outs[p] = tensor_to_uint8(y[0])
            scores[p].append(float(psnr(outs[p], gt)))
        agree.append(float(psnr(outs["bf16"], outs["fp32"])))
        log(f"[bf16 check] {i + 1}/{len(pairs)}")
    m32, m16 = float(np.mean(scores["fp32"])), float(np.mean(scores["bf16"]))
    return {"images": len(pairs), "psnr_fp32_db": m32, "psnr_bf16_db": m16, "delta_db": m16 - m32,
            "psnr_bf16_vs_fp32_db": float(np.mean(agree))}


def benchmark_large_image(restorer: Restorer, image_hw: Tuple[int, int], overlap: int = 32, batch: int = 4,
                          log: Callable[[str], None] = lambda m: None) -> Dict[str, object]:
    """Restore one random image of ``image_hw`` end to end as the evaluator runs it (tiles and blending for a fixed
    input size, padding for an any-size model) once; time and peak memory."""
    H, W = image_hw
    x = torch.rand(1, 3, H, W, generator=torch.Generator().manual_seed(2)).to(restorer.device)
    n_tiles = count_tiles(H, W, restorer.input_size, overlap) if restorer.input_size else 1
    log(f"[{H}x{W}] {n_tiles} tiles, {restorer.precision}, tile batch {batch}")
    protocol = get_protocol("full")
    t = interleaved_timings({"image": lambda: run_restorer(restorer, x, protocol, overlap, batch)},
                            restorer.device, 0, 1)["image"]
    return {"hw": (H, W), "tiles": n_tiles, "precision": restorer.precision, "tile_batch": batch,
            "seconds": t.wall_s, "cpu_seconds": t.cpu_s, "seconds_per_tile": t.wall_s / n_tiles,
            "peak_mem_bytes": t.peak_mem_bytes}
