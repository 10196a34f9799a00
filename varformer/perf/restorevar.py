"""Speed, FLOPs and memory of RestoreVAR (``varformer benchmark model --method restorevar|both``), and the table
that puts it beside VarFormer from one run.

For each precision: latency per image at batch 1 (its native 512x512 input when released), peak tensor memory
(weights + live activations, what CUDA's ``max_memory_allocated`` counts; tracked op by op on a CPU), FLOPs per
image counted on fake tensors (``torch.utils.flop_counter``: matmuls, convolutions, attention), and the share of
time in the parts the model marks with ``record_function`` ranges (``varformer.restorevar.PARTS``). Every timed
call goes through ``varformer.inference.model_restorer``, as ``varformer restore`` runs the model.

The comparison also derives what VarFormer costs on a 512x512 image the way ``evaluate --protocol restorevar`` and
``restore`` run it: overlapping 256x256 tiles (9 at overlap 32), i.e. 9 x its per-tile figures (tiles run one
after another at batch 1; the peak memory is that of one tile).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from varformer.inference import count_tiles, model_restorer
from varformer.perf.measure import (Machine, Timing, count_flops_by_module, interleaved_timings, peak_tensor_bytes,
                                    random_images, range_seconds, tensor_bytes)
from varformer.restorevar import PARTS, PATCH_NUMS_512, RestoreVAR, RestoreVARSettings, load_restorevar
from varformer.runtime import resolve_device

PART_LABELS = {"restorevar.encode_condition": "VQVAE encoder + conditioning",
               "restorevar.var_scale_loop": "VAR scale loop (greedy, KV cache)",
               "restorevar.refiner": "latent refiner", "restorevar.vqvae_decoder": "VQVAE decoder"}
REST = "glue (input checks, scaling)"
VARFORMER_TILE, TILE_OVERLAP = 256, 32
FLOP_PARTS = {"vqvae_encoder": ("vae.encoder",), "refiner": ("refiner",), "vqvae_decoder": ("vae.decoder",
                                                                                          "vae.post_quant_conv")}


@dataclass
class RestoreVARBenchmarkOptions:
    depth: int = 16
    vae_ch: int = 160
    patch_nums: Tuple[int, ...] = PATCH_NUMS_512
    refiner_depth: int = 12
    weights: Optional[str] = None               # our RestoreVAR checkpoint (None: random weights)
    device: str = "auto"
    precisions: Tuple[str, ...] = ("fp32",)
    warmup: int = 1
    repeat: int = 2
    full_size_flops: bool = False


@dataclass
class RestoreVARResult:
    precision: str
    b1: Timing
    tensor_peak_bytes: int
    part_shares: Dict[str, float] = field(default_factory=dict)


@dataclass
class RestoreVARBenchmark:
    config: Dict[str, object]
    image_size: int
    machine: Machine
    weights_note: str
    params: Dict[str, int]                      # transformer, refiner, vqvae, total
    flops_per_image: int
    flops_parts: Dict[str, int]                 # vqvae_encoder, transformer, refiner, vqvae_decoder
    results: List[RestoreVARResult]
    full_size: Optional[Dict[str, int]] = None


def _params(model: RestoreVAR) -> Dict[str, int]:
    count = lambda m: 0 if m is None else sum(p.numel() for p in m.parameters())  # noqa: E731
    out = {"transformer": count(model.var), "refiner": count(model.refiner), "vqvae": count(model.vae)}
    out["total"] = sum(out.values())
    return out


def flops_without_compute(settings: RestoreVARSettings) -> Dict[str, int]:
    """FLOPs of one image through the whole model (and the parameter counts), counted on fake tensors: built on
    the meta device, given uninitialised storage that is never touched. Seconds at full size on any machine."""
    with torch.device("meta"):
        m = RestoreVAR(**settings.constructor_kwargs())
    m = m.to_empty(device="cpu").eval()
    with FakeTensorMode(allow_non_fake_inputs=True):
        x = torch.empty(1, 3, settings.image_size, settings.image_size)
        total, per_module = count_flops_by_module(m, x)
    name = type(m).__name__
    parts = {part: sum(v for k, v in per_module.items() if k in {f"{name}.{m_}" for m_ in mods})
             for part, mods in FLOP_PARTS.items()}
    parts["transformer"] = total - sum(parts.values())      # blocks, embeddings, head and the quantizer steps
    return {"flops": total, **{f"flops_{k}": v for k, v in parts.items()}, **_params(m)}


def build_model(opts: RestoreVARBenchmarkOptions, device: torch.device) -> Tuple[RestoreVAR, str]:
    if opts.weights:
        return load_restorevar(opts.weights).to(device).eval(), f"weights: {opts.weights}"
    torch.manual_seed(0)
    model = RestoreVAR(depth=opts.depth, vae_ch=opts.vae_ch, patch_nums=opts.patch_nums,
                       refiner_depth=opts.refiner_depth)
    return model.to(device).eval(), "random weights (timings and FLOPs do not depend on them)"


def run_restorevar_benchmark(opts: RestoreVARBenchmarkOptions = RestoreVARBenchmarkOptions(),
                             log: Callable[[str], None] = lambda m: None) -> RestoreVARBenchmark:
    dev = resolve_device(opts.device)
    model, note = build_model(opts, dev)
    s = model.settings()
    log(f"RestoreVAR {s.to_metadata()} on {dev}; {note}")
    log("FLOPs per image (counted on fake tensors: nothing computed)")
    counted = flops_without_compute(s)
    flops = counted["flops"]
    restorers = {p: model_restorer(model, dev, p, input_size=s.image_size) for p in opts.precisions}
    x1 = random_images(1, s.image_size, dev)
    log(f"batch 1: {', '.join(opts.precisions)} in alternation, {opts.warmup} warm-up + {opts.repeat} timed rounds")
    b1 = interleaved_timings({p: (lambda r=r: r(x1)) for p, r in restorers.items()}, dev, opts.warmup, opts.repeat,
                             with_memory=True)
    held = tensor_bytes([model])
    results = []
    for p, r in restorers.items():
        log(f"[{p}] peak tensor memory (one tracked call) and part shares")
        peak = (b1[p].peak_mem_bytes if dev.type == "cuda" and b1[p].peak_mem_bytes is not None
                else held + peak_tensor_bytes(lambda r=r: r(x1)))
        seconds = range_seconds(lambda r=r: r(x1), list(PARTS), dev)
        total = max(seconds.pop("total"), 1e-12)
        shares = {PART_LABELS[k]: v / total for k, v in seconds.items()}
        shares[REST] = max(1.0 - sum(shares.values()), 0.0)
        results.append(RestoreVARResult(p, b1[p], peak, shares))
    full = None
    if opts.full_size_flops:
        log("FLOPs of the released size (depth 16, vae_ch 160, 512 px, refiner depth 12) without computing")
        full = flops_without_compute(RestoreVARSettings())
    return RestoreVARBenchmark(
        config=s.to_metadata(), image_size=s.image_size, machine=Machine.here(dev), weights_note=note,
        params=_params(model),
        flops_per_image=flops, flops_parts={k[len("flops_"):]: v for k, v in counted.items() if k.startswith("flops_")},
        results=results, full_size=full)


# ---------------------------------------------------------------------------------------------------------------
# Reports
# ---------------------------------------------------------------------------------------------------------------
def _gib(b: Optional[int]) -> str:
    return "-" if b is None else f"{b / 2 ** 30:.2f} GiB"


def format_restorevar_table(r: RestoreVARBenchmark) -> str:
    p = r.params
    lines = [f"RestoreVAR {r.config} | {p['total'] / 1e6:.1f} M params (transformer {p['transformer'] / 1e6:.2f} M, "
             f"refiner {p['refiner'] / 1e6:.2f} M, VQVAE {p['vqvae'] / 1e6:.2f} M) | {r.weights_note}",
             r.machine.describe(),
             f"FLOPs per {r.image_size}x{r.image_size} image: {r.flops_per_image / 1e9:.1f} GFLOP ("
             + ", ".join(f"{k.replace('_', ' ')} {v / 1e9:.1f}" for k, v in r.flops_parts.items()) + ")", "",
             "| precision | latency b1 wall (s/img) | CPU time b1 (s/img) | peak tensor mem b1 | achieved GFLOP/s |",
             "|---|---|---|---|---|"]
    for res in r.results:
        lines.append(f"| {res.precision} | {res.b1.wall_s:.3f} | {res.b1.cpu_s:.3f} | {_gib(res.tensor_peak_bytes)} | "
                     f"{r.flops_per_image / res.b1.wall_s / 1e9:.1f} |")
    if r.results:
        lines += ["", "| share of batch-1 time | " + " | ".join(x.precision for x in r.results) + " |",
                  "|---|" + "---|" * len(r.results)]
        for part in list(PART_LABELS.values()) + [REST]:
            lines.append(f"| {part} | " + " | ".join(f"{100 * x.part_shares.get(part, 0):.1f}%" for x in r.results)
                         + " |")
    if r.full_size:
        f = r.full_size
        tr = f["flops_transformer"] + f["flops_refiner"]
        lines += ["", f"released size (d16, 512 px, refiner depth 12), counted without computing: "
                      f"{(f['transformer'] + f['refiner']) / 1e6:.2f} M params without the VQVAE (Table 3: 296.95 M), "
                      f"{f['total'] / 1e6:.1f} M with it; {f['flops'] / 1e12:.3f} TFLOP per image: VQVAE encoder "
                      f"{f['flops_vqvae_encoder'] / 1e12:.3f}, transformer {f['flops_transformer'] / 1e12:.3f}, "
                      f"refiner {f['flops_refiner'] / 1e12:.3f}, VQVAE decoder {f['flops_vqvae_decoder'] / 1e12:.3f} "
                      f"(a multiply-add counts 2; Table 3 says 1.05 TFLOPs, counting method not given: transformer + "
                      f"refiner = {tr / 1e12:.2f} TFLOP = {tr / 2e12:.2f} T multiply-adds)"]
    return "\n".join(lines)


def format_comparison(varformer, restorevar: RestoreVARBenchmark, precisions: Sequence[str]) -> str:
    """RestoreVAR beside VarFormer (``varformer.perf.model.ModelBenchmark``) from one run, per precision."""
    tiles = count_tiles(512, 512, VARFORMER_TILE, TILE_OVERLAP)
    vf = {r.precision: r for r in varformer.results}
    rv = {r.precision: r for r in restorevar.results}
    S = restorevar.image_size
    m = restorevar.machine
    lines = [f"## RestoreVAR beside VarFormer ({m.device}: {m.device_name}, {m.threads} threads, one run)", "",
             "| method | precision | input | params (M) | GFLOP / input | latency b1 (s) | CPU time b1 (s) | "
             "peak tensor mem b1 | GFLOP / 512x512 image | s / 512x512 image |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for p in precisions:
        if p in vf:
            t = vf[p].b1
            name = f"VarFormer {varformer.config.get('depth')}/{varformer.config.get('vae_ch')}"
            lines.append(f"| {name} | {p} | 256x256 "
                         f"| {varformer.params / 1e6:.1f} | {varformer.flops_per_image / 1e9:.1f} | {t.wall_s:.3f} | "
                         f"{t.cpu_s:.3f} | {_gib(varformer.tensor_peaks.get(p))} | "
                         f"{tiles * varformer.flops_per_image / 1e9:.1f} ({tiles} tiles) | {tiles * t.wall_s:.2f} |")
        if p in rv:
            t = rv[p].b1
            per512 = (f"{restorevar.flops_per_image / 1e9:.1f} | {t.wall_s:.2f}" if S == 512
                      else f"{restorevar.flops_per_image / 1e9 * (512 / S) ** 2:.1f} (tiled, approx.) | -")
            lines.append(f"| RestoreVAR {restorevar.config['depth']}/{restorevar.config['vae_ch']} | {p} | {S}x{S} | "
                         f"{restorevar.params['total'] / 1e6:.1f} | {restorevar.flops_per_image / 1e9:.1f} | "
                         f"{t.wall_s:.3f} | {t.cpu_s:.3f} | {_gib(rv[p].tensor_peak_bytes)} | {per512} |")
    lines += ["", f"VarFormer on a 512x512 image = {tiles} overlapping 256x256 tiles (overlap {TILE_OVERLAP}), as "
                  "evaluate --protocol restorevar and restore run it: its per-tile figures x the tile count. Params "
                  "include the VQVAE(s). Random weights: timings and FLOPs do not depend on the values."]
    return "\n".join(lines)
