"""Speed / memory benchmark of the VAR backbone (`varformer benchmark backbone` calls `run_backbone_benchmark`).

For each precision it measures images/s of
- `encode`: `vae.img_to_indices` (encoder + quant_conv + 10-scale code search; always float32 by design),
- `teacher_forced`: `var(label, vae.indices_to_var_input(idx))` (the 680-token masked forward),
- `generate_greedy`: `var.generate(..., cfg=1.5, greedy=True)` (KV-cached sampling with CFG + decoding),
- `generate_sampled`: `var.generate(..., cfg=1.5, top_k=900, top_p=0.96, g_seed=0)` (official FID settings),
plus the peak memory of each call, FLOPs per image (`perf.measure.count_flops`, this package's own op-by-op
counter) and the achieved GFLOP/s next to the GFLOP/s of a large matmul measured in the same run. `bf16` runs the
transformer blocks under `runtime.autocast(device, "bf16")`; the VQVAE, the embeddings and the head stay float32.
Threads and TF32 are set for the run only (`perf.measure.process_settings`: fp32 means fp32 on a GPU).

The official weight files are used when they are found locally (the `checkpoints/` folder or the Hugging Face
cache, never downloaded here); otherwise the models have random weights, which does not change the timings (the
result says which).

`bf16_token_flips(var, label_B, idx_list, cfg)` compares greedy (argmax) tokens under bf16 autocast with float32:
teacher-forced on given tokens (per-position flip rate, no error propagation) and free-running greedy generation.
"""
from __future__ import annotations

from typing import Callable

import torch
from huggingface_hub import constants as hf_constants
from huggingface_hub import try_to_load_from_cache

from varformer.backbone.hub import VAE_FILENAME, VAR_REPO_ID, checkpoint_dirs, load_vae, load_var, var_filename
from varformer.backbone.var import VAR
from varformer.backbone.vqvae import VQVAE
from varformer.perf.measure import (count_flops, current_memory, interleaved_timings, matmul_gflops,
                                    process_settings, random_images)
from varformer.runtime import autocast, device_name, resolve_device

PRECISIONS = {'fp32': torch.float32, 'bf16': torch.bfloat16, 'fp16': torch.float16}
OPS = ('encode', 'teacher_forced', 'generate_greedy', 'generate_sampled')


def _find_local_weights(depth: int, checkpoints_dir=None) -> tuple[str | None, str | None]:
    """Paths of the official VAE / VAR files if present locally (folders or the HF cache), without downloading."""
    found = []
    for name in (VAE_FILENAME, var_filename(depth)):
        path = next((str(d / name) for d in checkpoint_dirs(checkpoints_dir) if (d / name).is_file()), None)
        if path is None:
            try:
                cached = try_to_load_from_cache(VAR_REPO_ID, name, cache_dir=hf_constants.HF_HUB_CACHE)
                path = cached if isinstance(cached, str) else None
            except Exception:  # no cache folder, an unreadable one: not found locally
                path = None
        found.append(path)
    return found[0], found[1]


def build_models(depth: int, vae_ch: int, device: torch.device, checkpoints_dir=None,
                 seed: int = 0) -> tuple[VQVAE, VAR, str]:
    """The official models when their files are present (and vae_ch == 160), else random-init ones."""
    vae_file, var_file = _find_local_weights(depth, checkpoints_dir) if vae_ch == 160 else (None, None)
    if vae_file and var_file:
        vae = load_vae(vae_file, device=device)
        var = load_var(depth, var_file, vae=vae, device=device)
        return vae, var, f"official weights ({vae_file}, {var_file})"
    torch.manual_seed(seed)
    vae = VQVAE(ch=vae_ch).to(device).eval()
    var = VAR(vae, depth=depth).to(device).eval()
    return vae, var, "random weights (official files not found locally; timings do not depend on weight values)"


def _measure(fn: Callable[[], object], device: torch.device, repeat: int, warmup: int, with_flops: bool) -> dict:
    """A FLOP-counting call if asked (it runs under a dispatch mode and does not warm up the kernels), then
    ``warmup`` untimed and ``repeat`` timed calls (median), the first timed one inside the peak-memory probe."""
    flops = count_flops(fn) if with_flops else None
    before = current_memory(device)
    t = interleaved_timings({'op': fn}, device, warmup, repeat, with_memory=True)['op']
    return {'seconds': t.wall_s, 'flops': flops, 'peak_bytes': t.peak_mem_bytes, 'before_bytes': before}


def run_backbone_benchmark(depth: int = 16, batch: int = 1, device: str = 'cpu',
                           precisions: tuple[str, ...] = ('fp32', 'bf16'), vae_ch: int = 160, repeat: int = 1,
                           ops: tuple[str, ...] = ('encode', 'teacher_forced', 'generate_greedy', 'generate_sampled'),
                           checkpoints_dir=None, seed: int = 0, matmul_n: int = 2048,
                           log: Callable[[str], None] | None = None, threads: int | None = None,
                           warmup: int = 1) -> dict:
    """Measure the backbone; returns a dict (see `format_table`). Per measurement: one FLOP-counting call (once per
    op), `warmup` untimed calls and `repeat` timed calls (median reported); `log` (e.g. `print`) receives a line per
    finished measurement; `threads` sets torch's CPU threads."""
    log = log or (lambda line: None)
    if set(precisions) - set(PRECISIONS):
        raise ValueError(f"unknown precision {sorted(set(precisions) - set(PRECISIONS))}; choose from "
                         f"{sorted(PRECISIONS)}")
    if repeat < 1 or warmup < 0:
        raise ValueError(f"need repeat >= 1 and warmup >= 0, got repeat={repeat}, warmup={warmup}")
    unknown = set(ops) - set(OPS)
    if unknown:
        raise ValueError(f"unknown benchmark ops {sorted(unknown)}")
    dev = resolve_device(device)
    with process_settings(threads=threads, allow_tf32=False):   # fp32 means fp32; all restored afterwards
        return _run(depth, batch, dev, precisions, vae_ch, repeat, ops, checkpoints_dir, seed, matmul_n, log, warmup)


def _run(depth: int, batch: int, dev: torch.device, precisions: tuple[str, ...], vae_ch: int, repeat: int,
         ops: tuple[str, ...], checkpoints_dir, seed: int, matmul_n: int, log: Callable[[str], None],
         warmup: int) -> dict:
    vae, var, weights = build_models(depth, vae_ch, dev, checkpoints_dir, seed)
    log(f"models ready: {weights}")
    img = random_images(batch, 256, dev, seed, low=-1.0)
    label_B = torch.arange(batch, device=dev) % var.num_classes
    with torch.inference_mode():
        idx = vae.img_to_indices(img)
        x_BLCv = vae.indices_to_var_input(idx)
    calls = {
        'encode': lambda: vae.img_to_indices(img),
        'teacher_forced': lambda: var(label_B, x_BLCv),
        'generate_greedy': lambda: var.generate(batch, label_B, cfg=1.5, greedy=True),
        'generate_sampled': lambda: var.generate(batch, label_B, cfg=1.5, top_k=900, top_p=0.96, g_seed=seed),
    }
    result = {
        'device': str(dev), 'device_name': device_name(dev),
        'threads': torch.get_num_threads(), 'torch': torch.__version__, 'depth': depth, 'vae_ch': vae_ch,
        'batch': batch, 'weights': weights, 'repeat': repeat, 'warmup': warmup,
        'var_params': sum(p.numel() for p in var.parameters()),
        'vae_params': sum(p.numel() for p in vae.parameters()),
        'matmul_gflops': {}, 'rows': [],
    }
    flops_cache: dict[str, int] = {}
    for precision in precisions:
        result['matmul_gflops'][precision] = matmul_gflops(dev, PRECISIONS[precision], n=matmul_n)
        log(f"matmul {precision}: {result['matmul_gflops'][precision]:.1f} GFLOP/s")
        for op in ops:
            if op == 'encode' and precision != precisions[0]:
                continue            # the VQVAE is float32 under every precision: measured once
            with torch.inference_mode(), autocast(dev, precision if op != 'encode' else 'fp32'):
                m = _measure(calls[op], dev, repeat, warmup, with_flops=op not in flops_cache)
            flops = flops_cache.setdefault(op, m['flops'])
            result['rows'].append({
                'op': op, 'precision': 'fp32' if op == 'encode' else precision,
                'seconds': m['seconds'], 'images_per_s': batch / m['seconds'],
                'flops_per_image': flops / batch, 'gflops_per_s': flops / m['seconds'] / 1e9,
                'peak_bytes': m['peak_bytes'], 'before_bytes': m['before_bytes'],
            })
            log(f"{op} {result['rows'][-1]['precision']}: {m['seconds']:.3f} s per batch of {batch}")
    return result


def format_table(result: dict) -> str:
    """Human-readable table of `run_backbone_benchmark`'s result."""
    lines = [
        f"VAR backbone benchmark: depth {result['depth']} ({result['var_params'] / 1e6:.1f} M params), "
        f"VQVAE ch {result['vae_ch']} ({result['vae_params'] / 1e6:.1f} M), batch {result['batch']}, "
        f"{result['device']} ({result['device_name']}, {result['threads']} threads), torch {result['torch']}",
        f"weights: {result['weights']}",
        "matmul roofline: " + ', '.join(f"{p} {g:.1f} GFLOP/s" for p, g in result['matmul_gflops'].items()),
        "peak memory: " + ('CUDA max allocated' if result['device'].startswith('cuda')
                           else 'process peak RSS (extra over the RSS before the call in parentheses)'),
        '',
        f"{'op':<18}{'prec':<6}{'s/batch':>10}{'img/s':>10}{'GFLOP/img':>11}{'GFLOP/s':>10}{'% mm':>7}{'peak MiB':>18}",
    ]
    for r in result['rows']:
        mm = result['matmul_gflops'].get(r['precision']) or result['matmul_gflops'].get('fp32')
        extra = (r['peak_bytes'] - r['before_bytes']) / 2 ** 20
        mem = f"{r['peak_bytes'] / 2 ** 20:.0f} (+{extra:.0f})"
        lines.append(f"{r['op']:<18}{r['precision']:<6}{r['seconds']:>10.3f}{r['images_per_s']:>10.3f}"
                     f"{r['flops_per_image'] / 1e9:>11.1f}{r['gflops_per_s']:>10.1f}"
                     f"{100 * r['gflops_per_s'] / mm if mm else float('nan'):>7.0f}{mem:>18}")
    lines.append("encode = VQVAE encoder + 10-scale code search (float32 under every precision); generate includes "
                 "decoding; bf16 = transformer blocks under autocast, embeddings/head/VQVAE float32.")
    return '\n'.join(lines)


@torch.no_grad()
def bf16_token_flips(var: VAR, label_B: torch.Tensor, idx_list: list[torch.Tensor], cfg: float = 1.5,
                     precision: str = 'bf16') -> dict:
    """How often greedy (argmax) tokens change when the transformer runs under `precision`'s autocast (bf16, or fp16)
    instead of fp32.

    `teacher_forced_*`: argmax of the (CFG-combined) teacher-forced logits on the given tokens, per position (no
    error propagation). `rollout_*`: free-running greedy generation; once one token differs, later scales see other
    inputs, so `rollout_first_scale` (first scale with a difference, or None) matters more than the fraction."""
    vae, dev = var.vae, label_B.device
    x_BLCv = vae.indices_to_var_input(idx_list)

    def cfg_logits():
        return var(label_B, x_BLCv), var.forward_cfg(label_B, x_BLCv, cfg)

    cond32, cfg32 = cfg_logits()
    with autocast(dev, precision):
        cond16, cfg16 = cfg_logits()
    g32 = var.sample(label_B.shape[0], label_B, cfg=cfg, greedy=True).idx_Bl
    with autocast(dev, precision):
        g16 = var.sample(label_B.shape[0], label_B, cfg=cfg, greedy=True).idx_Bl
    diff_scales = [si for si, (a, b) in enumerate(zip(g32, g16)) if not torch.equal(a, b)]
    n_tokens = sum(a.numel() for a in g32)
    return {
        'teacher_forced_cond_flip_rate': (cond32.argmax(-1) != cond16.argmax(-1)).float().mean().item(),
        'teacher_forced_cfg_flip_rate': (cfg32.argmax(-1) != cfg16.argmax(-1)).float().mean().item(),
        'teacher_forced_max_abs_logit_diff': (cfg32 - cfg16.float()).abs().max().item(),
        'rollout_flip_rate': sum((a != b).sum().item() for a, b in zip(g32, g16)) / n_tokens,
        'rollout_first_scale': diff_scales[0] if diff_scales else None,
        'positions': cond32.shape[0] * cond32.shape[1],
    }
