"""Speed, FLOPs and memory of the whole VarFormer restorer (``varformer benchmark model``).

For each precision: latency per 256x256 image at batch 1, throughput at a larger batch, peak memory at batch 1,
FLOPs per image (``torch.utils.flop_counter``), the achieved GFLOP/s next to a large matmul timed in the same run
(the practical roofline), and the share of time in the model's parts (VQVAE encoder + Adapter + quantisation, the
VAR scale loop, the U-Net encoder, the frozen VQVAE decoder features, the U-Net decoder), timed with forward hooks
and wrappers around the parts -- the model itself is not modified.

Comparison with the official code. The official repository cannot run here (and is not copied), so the reference
is ``official_style_forward``: the same modules and weights run the way the official test code runs them
(spec sections 6 and 11): float32, ``torch.no_grad`` instead of ``inference_mode``, the VAR loop on the full
doubled CFG batch from the first block on (queries of the cross-attention computed per row), and the whole frozen
VQVAE decoder on ``f_hat`` (its full-resolution level and RGB output are computed and discarded). Its output must
equal the model's (the benchmark reports the largest difference). Not reproduced, so the reference is *faster*
than the real official code: its explicit (non-SDPA) attention maps in the AFT and Swin blocks, the autograd graph
its test script keeps (no ``no_grad`` at all), and its 1x1 conv + single-channel softmax of the residual weight.

Optionally (``image_hw``) an image of any size (e.g. 2160x3840) is restored end to end through
``varformer.tiling.tiled_forward`` and timed, with its peak memory.
"""
from __future__ import annotations

import contextlib
import copy
import os
import platform
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

from varformer.profiling import count_flops, current_memory, measure_peak_memory, peak_tensor_bytes, tensor_bytes
from varformer.restore import ModelRestorer, resolve_device
from varformer.tiling import count_tiles, tiled_forward

IMAGE_SIZE = 256
REST = "VQVAE encoder + adapter + quantise + glue"
PARTS = (REST, "VAR scale loop", "U-Net encoder", "VQVAE decoder features", "U-Net decoder")


def cpu_features() -> Dict[str, bool]:
    """bf16-relevant x86 flags from /proc/cpuinfo (empty off Linux/x86)."""
    try:
        with open("/proc/cpuinfo") as fh:
            flags = set(next((l.split(":", 1)[1].split() for l in fh if l.startswith("flags")), []))
    except OSError:
        return {}
    return {f: f in flags for f in ("avx512f", "avx512_bf16", "amx_bf16", "amx_tile")}


def default_n_cross(depth: int) -> int:
    """The released (test) layout: one cross-attention block per two VAR blocks (official ``div_part`` 2)."""
    return max(1, depth // 2)


def build_model(depth: int, vae_ch: int, n_cross: Optional[int] = None, weights: Optional[str] = None,
                device: str | torch.device = "cpu"):
    """(VarFormer, note). Random weights unless ``weights`` is given: timings and FLOPs do not depend on the values."""
    if weights:
        from varformer.model.checkpoint_io import load_varformer
        model = load_varformer(weights)
        note = f"weights: {weights}"
    else:
        from varformer.model.varformer import VarFormer
        torch.manual_seed(0)
        model = VarFormer(depth=depth, vae_ch=vae_ch, n_cross=default_n_cross(depth) if n_cross is None else n_cross)
        note = "random weights (timings and FLOPs do not depend on them; outputs are meaningless)"
    return model.to(device).eval(), note


# ---------------------------------------------------------------------------------------------------------------
# The official-style reference path
# ---------------------------------------------------------------------------------------------------------------
def _doubled_rollout(var, cross_blocks, x_lq_BLc: torch.Tensor, cfg: float):
    """Greedy VAR rollout as the official code runs it: 2B rows through every block, per-row cross queries."""
    from varformer.model.prior_rollout import RolloutOutput

    B = x_lq_BLc.shape[0]
    R = 2 * B
    vae = var.vae
    cond_1D = var.class_emb(torch.full((1,), var.num_classes, dtype=torch.long, device=x_lq_BLc.device))
    lvl_pos = var.lvl_pos()
    first = var.first_scale_input(cond_1D, lvl_pos)
    d_RLC = torch.cat([first.expand(R, -1, -1),
                       (var.word_embed(x_lq_BLc) + lvl_pos[:, first.shape[1]:]).repeat(2, 1, 1)], dim=1)
    block_cond = var.block_condition(cond_1D)
    tokens, logits_all, priors, f_hat = [], [], [], None
    x_RlC = first.expand(R, -1, -1)
    n_scales = var.num_scales
    with var.kv_cache():
        for si in range(n_scales):
            begin, end = var.begin_ends[si]
            z = x_RlC
            for j, blk in enumerate(var.blocks):
                z = blk(z, block_cond, None)
                if j < len(cross_blocks):
                    z = cross_blocks[j](d_RLC[:, begin:end], z, n_images=B)
            logits = var.logits(z, cond_1D)
            t = cfg * si / (n_scales - 1)
            logits = (1 + t) * logits[:B] - t * logits[B:]
            logits_all.append(logits)
            idx_Bl = logits.argmax(dim=-1)
            tokens.append(idx_Bl)
            f_hat, prior, next_tokens = vae.autoregressive_step(f_hat, vae.quantize.embed_tokens(idx_Bl, si), si)
            priors.append(prior)
            if next_tokens is not None:
                x_RlC = var.scale_input(next_tokens, si + 1, lvl_pos).repeat(2, 1, 1)
    return RolloutOutput(tokens=tokens, logits=torch.cat(logits_all, dim=1), f_hat=f_hat,
                         priors=torch.stack(priors, dim=1))


def official_style_forward(model, lq_B3HW: torch.Tensor) -> torch.Tensor:
    """The model run the way the official test code runs it (see the module docstring); [0, 1] in and out."""
    m = model
    if m.head_layout != "official" or m.n_cross == 0 or m.dec_adjust:
        raise ValueError("the official-style reference covers the released layout: official head layout, "
                         "cross-attention blocks, no decoder alignment")
    with torch.no_grad():
        x = (lq_B3HW.float() - 0.5) / 0.5
        z, enc_feats, _ = m.vae.encoder.forward_features(x)
        f_a = m.adapter(m.vae.quant_conv(z))
        idx_lq, _ = m.vae.f_to_indices_and_fhats(f_a)
        r = _doubled_rollout(m.var, m.cross_attn, m.vae.indices_to_var_input(idx_lq), m.cfg)
        h, skips, _ = m.unet_encoder(x, r.priors, enc_feats)
        y = m.vae.quant_conv(h)
        _rgb, dec_feats, dz = m.vae.decoder.forward_features(m.vae.post_quant_conv(r.f_hat))  # RGB discarded
        n, _ = m.unet_decoder(y, skips, r.priors, dz, dec_feats)
        w = m.input_weight
        out = ((1 - w) * n + w * x).clamp(-1, 1)
    return out.add(1).mul(0.5).clamp(0, 1)


# ---------------------------------------------------------------------------------------------------------------
# Timing the parts without touching the model
# ---------------------------------------------------------------------------------------------------------------
class PartTimer:
    """Accumulates wall time of the model's parts: forward hooks on the U-Net modules, wrappers around the
    rollout function and the VQVAE-decoder feature method (restored on exit)."""

    def __init__(self, model, device: torch.device):
        self.model, self.device = model, device
        self.seconds: Dict[str, float] = {p: 0.0 for p in PARTS if p != REST}
        self._totals: Dict[str, float] = {"total": 0.0}
        self._stack: List[float] = []

    def _sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _timed(self, fn: Callable, into: Dict[str, float], key: str) -> Callable:
        """``fn`` that adds its own (device-synchronised) wall time to ``into[key]``."""
        def timed(*a, **k):
            self._sync()
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                self._sync()
                into[key] += time.perf_counter() - t0
        return timed

    def _wrap(self, name: str, fn: Callable) -> Callable:
        return self._timed(fn, self.seconds, name)

    @contextlib.contextmanager
    def active(self):
        import varformer.model.varformer as vf_module

        m = self.model
        handles = []
        for name, mod in (("U-Net encoder", m.unet_encoder), ("U-Net decoder", m.unet_decoder)):
            def pre(_mod, _inp, name=name):
                self._sync()
                self._stack.append(time.perf_counter())

            def post(_mod, _inp, _out, name=name):
                self._sync()
                self.seconds[name] += time.perf_counter() - self._stack.pop()
            handles += [mod.register_forward_pre_hook(pre), mod.register_forward_hook(post)]
        orig_rollout = vf_module.greedy_rollout
        vf_module.greedy_rollout = self._wrap("VAR scale loop", orig_rollout)
        m._vq_decoder_features = self._wrap("VQVAE decoder features", type(m)._vq_decoder_features.__get__(m))
        try:
            yield self
        finally:
            vf_module.greedy_rollout = orig_rollout
            del m._vq_decoder_features
            for h in handles:
                h.remove()

    def whole(self, fn: Callable) -> Callable:
        """Wrap a whole forward call: its time is the denominator of the shares."""
        return self._timed(fn, self._totals, "total")

    @property
    def total(self) -> float:
        return self._totals["total"]

    def shares(self) -> Dict[str, float]:
        """Fractions of the wrapped calls' time. What runs before the rollout (VQVAE encoder, Adapter, code search)
        is not one module, so it is the remainder, together with the small glue (residual blend, clamp)."""
        if self.total <= 0:
            return {}
        out = dict(self.seconds)
        out[REST] = max(self.total - sum(self.seconds.values()), 0.0)
        return {k: out[k] / self.total for k in PARTS}


# ---------------------------------------------------------------------------------------------------------------
# Measurements
# ---------------------------------------------------------------------------------------------------------------
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Timing:
    wall_s: float                 # median wall-clock seconds per call
    cpu_s: float                  # median CPU seconds of this process per call (all threads): robust to other load
    peak_mem_bytes: Optional[int]  # peak memory during the first timed call


def interleaved_timings(fns: Dict[str, Callable[[], object]], device: torch.device, warmup: int = 1,
                        repeat: int = 2, with_memory: bool = True) -> Dict[str, Timing]:
    """Time several calls in alternation (A B A B ...), so a change of machine load hits all of them alike.

    Wall and process-CPU time are both kept: on a shared machine the CPU time of a compute-bound call moves far
    less than its wall time, so ratios of CPU times are the fairer comparison there."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    walls: Dict[str, List[float]] = {k: [] for k in fns}
    cpus: Dict[str, List[float]] = {k: [] for k in fns}
    peaks: Dict[str, Optional[int]] = {k: None for k in fns}

    def one(name: str) -> None:
        _sync(device)
        w0, c0 = time.perf_counter(), time.process_time()
        fns[name]()
        _sync(device)
        walls[name].append(time.perf_counter() - w0)
        cpus[name].append(time.process_time() - c0)

    for r in range(repeat):
        for name in fns:
            if r == 0 and with_memory:
                peaks[name] = measure_peak_memory(lambda: one(name), device)
            else:
                one(name)
    med = lambda v: sorted(v)[len(v) // 2]  # noqa: E731
    return {k: Timing(med(walls[k]), med(cpus[k]), peaks[k]) for k in fns}


def matmul_roofline(device: torch.device, dtype: torch.dtype, n: int = 2048, repeat: int = 3) -> Tuple[float, float]:
    """GFLOP/s of an (n x n) @ (n x n) matmul per wall second and per CPU second of this process (the CPU figure
    is the one to read CPU-time measurements against on a shared machine; on CUDA only the wall figure counts)."""
    g = torch.Generator().manual_seed(0)
    a, b = (torch.randn(n, n, generator=g).to(device=device, dtype=dtype) for _ in range(2))
    t = interleaved_timings({"mm": lambda: torch.mm(a, b)}, device, 1, repeat, with_memory=False)["mm"]
    flops = 2 * n ** 3
    return flops / t.wall_s / 1e9, flops / max(t.cpu_s, 1e-9) / 1e9


def _images(batch: int, device: torch.device, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, IMAGE_SIZE, IMAGE_SIZE, generator=g).to(device)


def flops_without_compute(depth: int, vae_ch: int, n_cross: Optional[int] = None,
                          dec_adjust: bool = False, head_layout: str = "official") -> Dict[str, int]:
    """FLOPs per 256x256 image of the model and of the official-style reference without computing anything:
    the model is built on the meta device, given uninitialised CPU storage (never touched, so no memory is
    used) and run under a fake-tensor mode. Works for the full-size model on any machine in seconds."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    from varformer.model.varformer import VarFormer

    with torch.device("meta"):
        m = VarFormer(depth=depth, vae_ch=vae_ch, n_cross=default_n_cross(depth) if n_cross is None else n_cross,
                      dec_adjust=dec_adjust, head_layout=head_layout)
    m = m.to_empty(device="cpu").eval()
    with FakeTensorMode(allow_non_fake_inputs=True):
        x = torch.empty(1, 3, IMAGE_SIZE, IMAGE_SIZE)
        flops = {"model": count_flops(m, x)}
        if m.head_layout == "official" and m.n_cross > 0 and not dec_adjust:
            flops["reference"] = count_flops(official_style_forward, m, x)
    flops["params"] = sum(p.numel() for p in m.parameters())
    return flops


@dataclass
class PrecisionResult:
    precision: str
    b1: Timing
    throughput_ips: Optional[float]       # images/s at the larger batch (wall)
    throughput_cpu_s_per_img: Optional[float]
    matmul_gflops: float                  # per wall second
    matmul_cpu_gflops: float              # per CPU second
    part_shares: Dict[str, float] = field(default_factory=dict)


@dataclass
class ModelBenchmark:
    config: Dict[str, object]
    device: str
    device_name: str
    threads: int
    load_average: Optional[float]
    cpu_flags: Dict[str, bool]
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


def run_model_benchmark(depth: int = 16, vae_ch: int = 160, n_cross: Optional[int] = None, device: str = "cpu",
                        precisions: Sequence[str] = ("fp32", "bf16"), batch: int = 4, warmup: int = 1,
                        repeat: int = 2, weights: Optional[str] = None, reference: bool = True,
                        bf16_check: bool = False, bf16_check_images_per_task: Optional[int] = None, image_hw: Optional[Tuple[int, int]] = None, tile_overlap: int = 32,
                        tile_batch: int = 4, full_size_flops: bool = False, bf16_transformer: bool = False,
                        log: Callable[[str], None] = lambda m: None) -> ModelBenchmark:
    dev = resolve_device(device)
    for p in precisions:
        if p not in ("fp32", "bf16"):
            raise ValueError(f"unknown precision {p!r}; choose fp32 or bf16")
    if repeat < 1 or warmup < 0 or batch < 1:
        raise ValueError("need repeat >= 1, warmup >= 0, batch >= 1")
    if bf16_check and set(precisions) != {"fp32", "bf16"}:
        raise ValueError("the bf16 check compares fp32 and bf16 outputs: run it with --precision fp32 bf16")
    mem_before = current_memory(dev)
    model, note = build_model(depth, vae_ch, n_cross, weights, dev)
    if bf16_transformer:
        if not hasattr(model, "bf16_transformer"):
            raise ValueError("this model has no bf16_transformer switch")
        model.bf16_transformer = True
    # bf16 runs as ``varformer restore --precision bf16`` runs it: a copy holding its bf16-eligible weights in
    # bf16, convolutions channels-last (prepare_inference); fp32 and the official-style reference use the
    # float32 model the copy was made from
    models = {p: model for p in precisions}
    if "bf16" in precisions and hasattr(model, "prepare_inference"):
        keep_fp32 = "fp32" in precisions or reference
        models["bf16"] = (copy.deepcopy(model) if keep_fp32 else model).prepare_inference("bf16")
        note += "; bf16: weights held in bf16 where autocast allows, convolutions channels-last (prepare_inference)"
        if not keep_fp32:
            model = None
    model_mem = current_memory(dev) - mem_before if mem_before else None
    cfg = models[precisions[0]].config()
    note += "; VAR loop in bf16 under bf16" if bf16_transformer else ""
    x1, xb = _images(1, dev), _images(batch, dev, seed=1)
    log(f"model {cfg} on {dev}; {note}")
    log("FLOPs per image (counted on fake tensors: nothing computed)")
    counted = flops_without_compute(cfg["depth"], cfg["vae_ch"], cfg["n_cross"], bool(cfg.get("dec_adjust")),
                                    cfg.get("head_layout", "official"))
    flops = counted["model"]

    # batch 1: every precision and the reference in alternation; the parts are timed on the model's calls only
    timers = {p: PartTimer(models[p], dev) for p in precisions}
    outputs: Dict[str, torch.Tensor] = {}

    def model_call(p: str) -> Callable[[], None]:
        restorer = timers[p].whole(ModelRestorer(models[p], dev, p))

        def call():
            with timers[p].active():
                outputs[p] = restorer(x1)
        return call

    fns = {p: model_call(p) for p in precisions}
    use_ref = reference and model is not None and "reference" in counted
    if use_ref:
        fns["reference"] = lambda: outputs.__setitem__("reference", official_style_forward(model, x1))
    log(f"batch 1: {', '.join(fns)} in alternation, {warmup} warm-up + {repeat} timed rounds")
    b1 = interleaved_timings(fns, dev, warmup, repeat, with_memory=True)
    tensor_peaks: Dict[str, int] = {}
    held = {p: tensor_bytes([models[p]]) for p in precisions}
    if use_ref:
        held["reference"] = tensor_bytes([model])
    if dev.type == "cuda":
        # max_memory_allocated counts every resident model: leave out those the measured call did not use
        resident = tensor_bytes(list({id(m): m for m in [*models.values(), model] if m is not None}.values()))
        tensor_peaks = {k: t.peak_mem_bytes - (resident - held[k]) for k, t in b1.items()
                        if t.peak_mem_bytes is not None}
    else:
        log("batch 1: peak tensor memory, one tracked call each")
        plain = {p: (lambda p=p: ModelRestorer(models[p], dev, p)(x1)) for p in precisions}  # not the part timers
        if use_ref:
            plain["reference"] = lambda: official_style_forward(model, x1)
        tensor_peaks = {k: held[k] + peak_tensor_bytes(fn) for k, fn in plain.items()}

    thr: Dict[str, Timing] = {}
    if batch > 1:
        log(f"batch {batch}: {', '.join(precisions)} in alternation, {repeat} timed rounds")
        thr = interleaved_timings({p: (lambda p=p: ModelRestorer(models[p], dev, p)(xb)) for p in precisions}, dev,
                                  0, repeat, with_memory=False)
    results = []
    for p in precisions:
        log(f"[{p}] matmul roofline")
        roof_wall, roof_cpu = matmul_roofline(dev, torch.float32 if p == "fp32" else torch.bfloat16)
        t = thr.get(p)
        results.append(PrecisionResult(p, b1[p], batch / t.wall_s if t else None, t.cpu_s / batch if t else None,
                                       roof_wall, roof_cpu, timers[p].shares()))

    ref = None
    if use_ref:
        diff = float((outputs["reference"] - outputs["fp32"]).abs().max()) if "fp32" in outputs else None
        ref = {"b1": b1["reference"], "flops_per_image": counted["reference"], "max_abs_diff_vs_model_fp32": diff}

    bcheck = (bf16_psnr_check(models, dev, images_per_task=bf16_check_images_per_task, log=log)
              if bf16_check else None)
    large = None
    if image_hw is not None:
        large = benchmark_large_image(models[precisions[-1]], dev, image_hw, precisions[-1], tile_overlap, tile_batch,
                                      log=log)
    full = None
    if full_size_flops:
        log("FLOPs of the full-size model (depth 16, vae_ch 160) without computing")
        full = flops_without_compute(16, 160)
    return ModelBenchmark(
        config=cfg, device=str(dev), device_name=_device_name(dev), threads=torch.get_num_threads(),
        load_average=os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        cpu_flags=cpu_features() if dev.type == "cpu" else {}, weights_note=note,
        params=sum(p.numel() for p in models[precisions[0]].parameters()), flops_per_image=flops,
        model_memory_bytes=model_mem,
        batch=batch, results=results, reference=ref, bf16_check=bcheck, large_image=large, full_size_flops=full,
        tensor_peaks=tensor_peaks)


def _device_name(dev: torch.device) -> str:
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    return platform.processor() or platform.machine()


def bf16_psnr_check(models: Dict[str, torch.nn.Module], device: torch.device, cache_dir: Optional[str] = None,
                    images_per_task: Optional[int] = None,
                    log: Callable[[str], None] = lambda m: None) -> Dict[str, float]:
    """Mean PSNR (dB, RGB, 8-bit outputs) over the demo test benchmark of ``models['fp32']`` and ``models['bf16']``
    outputs (the same weights; the bf16 one may hold them in bf16), tiled at full size (all of its images, or the
    first ``images_per_task`` of every task)."""
    import numpy as np

    from varformer.data.demo import DEMO_TASKS, ensure_demo
    from varformer.data.image_io import read_image, tensor_to_uint8, to_tensor
    from varformer.metrics import psnr

    root = ensure_demo(cache_dir, log=log)
    pairs = []
    for task in DEMO_TASKS:
        d = os.path.join(root, "test", task)
        for name in sorted(os.listdir(os.path.join(d, "input")))[:images_per_task]:
            pairs.append((os.path.join(d, "input", name), os.path.join(d, "target", name)))
    scores: Dict[str, List[float]] = {"fp32": [], "bf16": []}
    agree: List[float] = []
    for i, (inp, tgt) in enumerate(pairs):
        lq = to_tensor(read_image(inp)[0])[None].to(device)
        gt = (np.asarray(read_image(tgt)[0]) * 255).round().astype(np.uint8)
        outs = {}
        for p in ("fp32", "bf16"):
            y = tiled_forward(ModelRestorer(models[p], device, p), lq, tile=IMAGE_SIZE, overlap=32, batch_size=4)
            outs[p] = tensor_to_uint8(y[0])
            scores[p].append(float(psnr(outs[p], gt)))
        agree.append(float(psnr(outs["bf16"], outs["fp32"])))
        log(f"[bf16 check] {i + 1}/{len(pairs)}")
    m32, m16 = float(np.mean(scores["fp32"])), float(np.mean(scores["bf16"]))
    return {"images": len(pairs), "psnr_fp32_db": m32, "psnr_bf16_db": m16, "delta_db": m16 - m32,
            "psnr_bf16_vs_fp32_db": float(np.mean(agree))}


def benchmark_large_image(model, device: torch.device, image_hw: Tuple[int, int], precision: str = "fp32",
                          overlap: int = 32, batch: int = 4,
                          log: Callable[[str], None] = lambda m: None) -> Dict[str, object]:
    """Restore one random image of ``image_hw`` end to end (padding, tiles, blending) once; time and peak memory."""
    H, W = image_hw
    x = torch.rand(1, 3, H, W, generator=torch.Generator().manual_seed(2)).to(device)
    restorer = ModelRestorer(model, device, precision)
    n_tiles = count_tiles(H, W, IMAGE_SIZE, overlap)
    log(f"[{H}x{W}] {n_tiles} tiles, {precision}, tile batch {batch}")
    t = interleaved_timings({"image": lambda: tiled_forward(restorer, x, tile=IMAGE_SIZE, overlap=overlap,
                                                            batch_size=batch)}, device, 0, 1, with_memory=True)["image"]
    return {"hw": (H, W), "tiles": n_tiles, "precision": precision, "tile_batch": batch, "seconds": t.wall_s,
            "cpu_seconds": t.cpu_s, "seconds_per_tile": t.wall_s / n_tiles, "peak_mem_bytes": t.peak_mem_bytes}


# ---------------------------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------------------------
def _gib(b: Optional[int]) -> str:
    return "-" if b is None else f"{b / 2 ** 30:.2f} GiB"


def format_model_table(r: ModelBenchmark) -> str:
    lines = [f"VarFormer {r.config} | {r.params / 1e6:.1f} M params | {r.weights_note}",
             f"device {r.device} ({r.device_name}), {r.threads} threads"
             + (f", load average {r.load_average:.1f} at the end" if r.load_average is not None else "")
             + (f", CPU flags: {', '.join(f'{k}={int(v)}' for k, v in r.cpu_flags.items())}" if r.cpu_flags else ""),
             f"FLOPs per 256x256 image: {r.flops_per_image / 1e9:.1f} GFLOP"
             + (f"; models resident: {_gib(r.model_memory_bytes)}" if r.model_memory_bytes else ""),
             "",
             f"| precision | latency b1 wall (s/img) | CPU time b1 (s/img) | throughput b{r.batch} (img/s) "
             f"| CPU time b{r.batch} (s/img) | peak tensor mem b1 | peak {'RSS' if r.device == 'cpu' else 'mem'} b1 "
             f"| achieved GFLOP/s b1, wall / CPU | matmul GFLOP/s, wall / CPU |",
             "|---|---|---|---|---|---|---|---|---|"]
    rows = [(p.precision, p.precision, p.b1, p.throughput_ips, p.throughput_cpu_s_per_img,
             (p.matmul_gflops, p.matmul_cpu_gflops)) for p in r.results]
    if r.reference:
        rows.append(("official-style ref. (fp32)", "reference", r.reference["b1"], None, None, None))
    for name, key, t, thr, thr_cpu, roof in rows:
        flops = r.reference["flops_per_image"] if key == "reference" else r.flops_per_image
        lines.append(f"| {name} | {t.wall_s:.3f} | {t.cpu_s:.3f} | {'-' if thr is None else f'{thr:.3f}'} | "
                     f"{'-' if thr_cpu is None else f'{thr_cpu:.3f}'} | {_gib(r.tensor_peaks.get(key))} | "
                     f"{_gib(t.peak_mem_bytes)} | "
                     f"{flops / t.wall_s / 1e9:.1f} / {flops / max(t.cpu_s, 1e-9) / 1e9:.1f} | "
                     f"{'-' if roof is None else f'{roof[0]:.1f} / {roof[1]:.1f}'} |")
    lines += ["", "peak tensor mem = weights + live activations at their peak (what CUDA's max_memory_allocated "
                  "counts), per model; peak RSS = the whole process (interpreter, libraries, allocator caches and "
                  "every model the run holds included)"
              if r.device == "cpu" else "peak memory = torch.cuda.max_memory_allocated (weights + activations)"]
    if r.results and r.results[0].part_shares:
        lines += ["", "| share of batch-1 time | " + " | ".join(p.precision for p in r.results) + " |",
                  "|---|" + "---|" * len(r.results)]
        for part in PARTS:
            lines.append(f"| {part} | " + " | ".join(f"{100 * p.part_shares.get(part, 0):.1f}%"
                                                      for p in r.results) + " |")
    if r.reference:
        ref = r.reference
        lines += ["", "official-style reference = the same modules and weights run as the official test code runs "
                      "them: fp32, no_grad, doubled CFG batch from block 0, full VQVAE decoder (RGB discarded)",
                  f"  {ref['flops_per_image'] / 1e9:.1f} GFLOP/img ({100 * (ref['flops_per_image'] / r.flops_per_image - 1):.1f}% "
                  f"more than the model)"
                  + (f"; max |output - model fp32 output| = {ref['max_abs_diff_vs_model_fp32']:.2e}"
                     if ref.get("max_abs_diff_vs_model_fp32") is not None else "")]
        for p in r.results:
            lines.append(f"  speed-up of {p.precision} over the reference, batch 1: wall "
                         f"{ref['b1'].wall_s / p.b1.wall_s:.2f}x, CPU time {ref['b1'].cpu_s / p.b1.cpu_s:.2f}x")
    if r.bf16_check:
        b = r.bf16_check
        lines += ["", f"bf16 vs fp32 over the demo test set ({b['images']} images, tiled at full size): mean PSNR "
                      f"fp32 {b['psnr_fp32_db']:.3f} dB, bf16 {b['psnr_bf16_db']:.3f} dB, delta {b['delta_db']:+.4f} dB; "
                      f"bf16 output vs fp32 output {b['psnr_bf16_vs_fp32_db']:.1f} dB"]
    if r.large_image:
        li = r.large_image
        lines += ["", f"{li['hw'][0]}x{li['hw'][1]} image end to end ({li['precision']}, {li['tiles']} tiles, tile batch "
                      f"{li['tile_batch']}): {li['seconds']:.1f} s wall ({li['seconds_per_tile']:.3f} s/tile), "
                      f"{li['cpu_seconds']:.1f} s CPU, peak mem {_gib(li['peak_mem_bytes'])}"]
    if r.full_size_flops:
        f = r.full_size_flops
        lines += ["", f"full-size model (depth 16, vae_ch 160), counted without computing: {f['params'] / 1e6:.1f} M "
                      f"params, {f['model'] / 1e9:.1f} GFLOP/img; official-style reference {f['reference'] / 1e9:.1f} "
                      f"GFLOP/img ({100 * (f['reference'] / f['model'] - 1):.1f}% more)"]
    return "\n".join(lines)
