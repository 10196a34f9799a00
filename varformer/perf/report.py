"""The text report of ``varformer benchmark model``: one markdown table per run (latency, throughput, memory,
achieved GFLOP/s against the matmul roofline), the time share of each part, the reference comparison."""
from __future__ import annotations

from typing import Optional

from varformer.perf.model import PARTS, ModelBenchmark


def _gib(b: Optional[int]) -> str:
    return "-" if b is None else f"{b / 2 ** 30:.2f} GiB"


def format_model_table(r: ModelBenchmark) -> str:
    on_cpu = r.machine.device == "cpu"
    lines = [f"VarFormer {r.config} | {r.params / 1e6:.1f} M params | {r.weights_note}",
             r.machine.describe(),
             f"FLOPs per 256x256 image: {r.flops_per_image / 1e9:.1f} GFLOP"
             + (f"; models resident: {_gib(r.model_memory_bytes)}" if r.model_memory_bytes else ""),
             "",
             f"| precision | latency b1 wall (s/img) | CPU time b1 (s/img) | throughput b{r.batch} (img/s) "
             f"| CPU time b{r.batch} (s/img) | peak tensor mem b1 | peak {'RSS' if on_cpu else 'mem'} b1 "
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
              if on_cpu else "peak memory = torch.cuda.max_memory_allocated (weights + activations)"]
    if r.results and r.results[0].part_shares:
        lines += ["", "| share of batch-1 time | " + " | ".join(p.precision for p in r.results) + " |",
                  "|---|" + "---|" * len(r.results)]
        for part in PARTS:
            lines.append(f"| {part} | " + " | ".join(f"{100 * p.part_shares.get(part, 0):.1f}%"
                                                      for p in r.results) + " |")
    if r.results and r.results[0].part_bounds:
        lines += ["", f"part bounds, batch 1: the larger of compute (GFLOP at the matmul rate of the dtype each op "
                      f"computes in: a bf16 run keeps the tokenizer and the VAR loop float32) and memory (GB every op "
                      f"reads and writes, at the copy rate {r.copy_gbytes_per_s:.1f} GB/s measured in this run); "
                      "x = part time / bound",
                  "| part | " + " | ".join(f"{p.precision}: s, GFLOP, GB, bound s, x" for p in r.results) + " |",
                  "|---|" + "---|" * len(r.results)]
        for part in PARTS:
            cells = []
            for p in r.results:
                b = p.part_bounds.get(part)
                cells.append("-" if b is None else f"{b['seconds']:.2f}, {b['gflop']:.1f}, {b['gbytes']:.1f}, "
                                                   f"{b['bound_s']:.2f} ({'compute' if b['compute_s'] >= b['memory_s'] else 'memory'}), "
                                                   f"{b['ratio']:.2f}x")
            lines.append(f"| {part} | " + " | ".join(cells) + " |")
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
