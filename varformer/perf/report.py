"""The text report of ``varformer benchmark model``: per method one markdown table (latency, throughput, memory,
achieved GFLOP/s against the matmul roofline), its FLOPs and parameters by module group, the time share and bound
of each part, the reference comparison; then every method of the run side by side, priced per 512x512 image."""
from __future__ import annotations

from typing import List, Optional

from varformer.perf.model import TARGET, MethodBenchmark, ModelBenchmark


def _gib(b: Optional[int]) -> str:
    return "-" if b is None else f"{b / 2 ** 30:.2f} GiB"


def _shape(shapes) -> str:
    return " + ".join("x".join(str(d) for d in s[1:]) for s in shapes) or "-"


def _groups(flops: dict, params: dict) -> str:
    return ", ".join(f"{k} {v / 1e9:.1f} GFLOP / {params.get(k, 0) / 1e6:.2f} M" for k, v in flops.items())


def format_method_table(r: MethodBenchmark, run: ModelBenchmark) -> str:
    on_cpu = run.machine.device == "cpu"
    batched = r.batch > 1      # batch 1 only: no throughput columns (they would repeat the batch-1 ones)
    lines = [f"## {r.title}: {r.description} | {r.params / 1e6:.1f} M params | {r.weights_note}",
             run.machine.describe(),
             f"FLOPs per input ({_shape(r.input_shapes)}): {r.flops_per_input / 1e9:.1f} GFLOP"
             + (f"; models resident: {_gib(r.model_memory_bytes)}" if r.model_memory_bytes else ""),
             *([f"by module (FLOPs / parameters): {_groups(r.flop_groups, r.param_groups)}"]
               if len(r.flop_groups) > 1 else []),
             "",
             "| precision | latency b1 wall (s/input) | CPU time b1 (s/input) "
             + (f"| throughput b{r.batch} (inputs/s) | CPU time b{r.batch} (s/input) " if batched else "")
             + f"| peak tensor mem b1 | peak {'RSS' if on_cpu else 'mem'} b1 "
             f"| achieved GFLOP/s b1, wall / CPU | matmul GFLOP/s, wall / CPU |",
             "|---|---|---|" + ("---|---|" if batched else "") + "---|---|---|---|"]
    rows = [(p.precision, p.precision, p.b1, p.throughput_ips, p.throughput_cpu_s_per_img,
             (p.matmul_gflops, p.matmul_cpu_gflops)) for p in r.results]
    if r.reference:
        rows.append((r.reference["label"], "reference", r.reference["b1"], None, None, None))
    for name, key, t, thr, thr_cpu, roof in rows:
        flops = r.reference["flops_per_input"] if key == "reference" else r.flops_per_input
        throughput = (f"{'-' if thr is None else f'{thr:.3f}'} | {'-' if thr_cpu is None else f'{thr_cpu:.3f}'} | "
                      if batched else "")
        lines.append(f"| {name} | {t.wall_s:.3f} | {t.cpu_s:.3f} | {throughput}{_gib(r.tensor_peaks.get(key))} | "
                     f"{_gib(t.peak_mem_bytes)} | "
                     f"{flops / t.wall_s / 1e9:.1f} / {flops / max(t.cpu_s, 1e-9) / 1e9:.1f} | "
                     f"{'-' if roof is None else f'{roof[0]:.1f} / {roof[1]:.1f}'} |")
    lines += ["", "peak tensor mem = weights + live activations at their peak (what CUDA's max_memory_allocated "
                  "counts), per model; peak RSS = the whole process (interpreter, libraries, allocator caches and "
                  "every model the run holds included)"
              if on_cpu else "peak memory = torch.cuda.max_memory_allocated (weights + activations)"]
    lines += _part_tables(r, run)
    if r.reference:
        ref = r.reference
        lines += ["", f"{ref['label']} = {ref['description']}",
                  f"  {ref['flops_per_input'] / 1e9:.1f} GFLOP/input "
                  f"({100 * (ref['flops_per_input'] / r.flops_per_input - 1):.1f}% more than the model)"
                  + (f"; max |output - model fp32 output| = {ref['max_abs_diff_vs_model_fp32']:.2e}"
                     if ref.get("max_abs_diff_vs_model_fp32") is not None else "")]
        for p in r.results:
            lines.append(f"  speed-up of {p.precision} over the reference, batch 1: wall "
                         f"{ref['b1'].wall_s / p.b1.wall_s:.2f}x, CPU time {ref['b1'].cpu_s / p.b1.cpu_s:.2f}x")
    lines += _extras(r)
    return "\n".join(lines)


def _part_tables(r: MethodBenchmark, run: ModelBenchmark) -> List[str]:
    lines: List[str] = []
    if r.parts and r.results and r.results[0].part_shares:
        lines += ["", "| share of batch-1 time | " + " | ".join(p.precision for p in r.results) + " |",
                  "|---|" + "---|" * len(r.results)]
        for part in r.parts:
            lines.append(f"| {part} | " + " | ".join(f"{100 * p.part_shares.get(part, 0):.1f}%"
                                                      for p in r.results) + " |")
    if r.parts and r.results and r.results[0].part_bounds:
        lines += ["", f"part bounds, batch 1: the larger of compute (GFLOP at the matmul rate of the dtype each op "
                      f"computes in: a bf16 run keeps some parts float32) and memory (GB every op reads and writes, "
                      f"at the copy rate {run.copy_gbytes_per_s:.1f} GB/s measured in this run); "
                      "x = part time / bound",
                  "| part | " + " | ".join(f"{p.precision}: s, GFLOP, GB, bound s, x" for p in r.results) + " |",
                  "|---|" + "---|" * len(r.results)]
        for part in r.parts:
            cells = []
            for p in r.results:
                b = p.part_bounds.get(part)
                kind = "-" if b is None else ("compute" if b["compute_s"] >= b["memory_s"] else "memory")
                cells.append("-" if b is None else f"{b['seconds']:.2f}, {b['gflop']:.1f}, {b['gbytes']:.1f}, "
                                                   f"{b['bound_s']:.2f} ({kind}), {b['ratio']:.2f}x")
            lines.append(f"| {part} | " + " | ".join(cells) + " |")
    return lines


def _extras(r: MethodBenchmark) -> List[str]:
    lines: List[str] = []
    if r.bf16_check:
        b = r.bf16_check
        lines += ["", f"bf16 vs fp32 over the demo test set ({b['images']} images, at native resolution): mean PSNR "
                      f"fp32 {b['psnr_fp32_db']:.3f} dB, bf16 {b['psnr_bf16_db']:.3f} dB, delta "
                      f"{b['delta_db']:+.4f} dB; bf16 output vs fp32 output {b['psnr_bf16_vs_fp32_db']:.1f} dB"]
    if r.large_image:
        li = r.large_image
        lines += ["", f"{li['hw'][0]}x{li['hw'][1]} image end to end ({li['precision']}, {li['tiles']} tiles, tile "
                      f"batch {li['tile_batch']}): {li['seconds']:.1f} s wall ({li['seconds_per_tile']:.3f} s/tile), "
                      f"{li['cpu_seconds']:.1f} s CPU, peak mem {_gib(li['peak_mem_bytes'])}"]
    if r.full_size:
        f = r.full_size
        ref = (f"; reference {f['reference'] / 1e9:.1f} GFLOP ({100 * (f['reference'] / f['flops'] - 1):.1f}% more)"
               if "reference" in f else "")
        lines += ["", f"released size ({f['description']}), counted without computing: {f['params'] / 1e6:.1f} M "
                      f"params, {f['flops'] / 1e9:.1f} GFLOP per input{ref}"]
        if len(f["flop_groups"]) > 1:
            lines.append(f"  by module (FLOPs / parameters): {_groups(f['flop_groups'], f['param_groups'])}")
        if f.get("note"):
            lines.append(f"  {f['note']}")
    return lines


def format_comparison(run: ModelBenchmark) -> str:
    """Every method of the run side by side, per precision, with what a 512x512 image costs each."""
    m = run.machine
    lines = [f"## Side by side ({m.device}: {m.device_name}, {m.threads} threads, one run)", "",
             "| method | settings | precision | input | params (M) | GFLOP / input | latency b1 (s) | "
             f"CPU time b1 (s) | peak tensor mem b1 | GFLOP / {TARGET}x{TARGET} image | s / {TARGET}x{TARGET} image |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in run.methods:
        k = r.per_512
        approx = "" if k.exact else " (approx.)"
        for p in r.results:
            lines.append(f"| {r.title} | {r.description} | {p.precision} | {_shape(r.input_shapes)} | "
                         f"{r.params / 1e6:.1f} | {r.flops_per_input / 1e9:.1f} | {p.b1.wall_s:.3f} | "
                         f"{p.b1.cpu_s:.3f} | {_gib(r.tensor_peaks.get(p.precision))} | "
                         f"{k.inputs * r.flops_per_input / 1e9:.1f}{approx} | {k.inputs * p.b1.wall_s:.2f}{approx} |")
    lines += ["", f"per {TARGET}x{TARGET} image, from each method's restorer traits:"]
    lines += [f"- {r.title}: {r.per_512.note}" for r in run.methods]
    lines.append("Params include every module of the model (frozen backbones too)."
                 + (" Random weights: timings and FLOPs do not depend on the values."
                    if all(r.weights_note.startswith("random") for r in run.methods) else ""))
    return "\n".join(lines)


def format_model_report(run: ModelBenchmark) -> str:
    """Each method's table, then the side-by-side table."""
    return "\n\n".join([format_method_table(r, run) for r in run.methods] + [format_comparison(run)])
