"""``varformer train STAGE --config ... --dry-run``: everything a run checks and decides before it trains,
printed as a plan, without building the model or reading a tensor of the big weight files.

It runs the same checks as a real start (``preflight``: config numbers, training data, validation set, weight
files; ``run_folder``: lock, used folder, matching resume) and then reports the batch plan, the schedule, the
precision this machine's device resolves to and the memory a step needs per device (the stage's
``estimate_memory``: activations counted on fake tensors, no compute, no allocation, but tens of seconds of tracing
on a CPU for a full-size model; ``--no-memory`` skips it).
"""
from __future__ import annotations

import os
import time
from typing import Callable, List, Optional

import torch

from varformer.config import method_of
from varformer.errors import RunFolderError
from varformer.methods.api import StageSpec
from varformer.runtime import device_name, native_bf16, resolve_device, resolve_precision
from varformer.training.batching import BatchPlan, plan_batches
from varformer.training.preflight import Preflight, check_run_inputs
from varformer.training.run_folder import lock_owner, open_run_folder

GIB = 2 ** 30


def describe_schedule(t) -> str:
    """``Adam lr 1e-4 (betas 0.9, 0.99), x0.5 at 400,000 -> 5e-05, ...; EMA 0.998``."""
    lr, parts = t.lr, []
    for m in sorted(t.milestones):
        lr *= t.gamma
        parts.append(f"x{t.gamma:g} at step {m:,} -> {lr:.3g}" + (" (after the last step)" if m >= t.total_iters
                                                                    else ""))
    steps = ", ".join(parts) if parts else "constant"
    if t.lr_schedule == "lin0":
        steps = (f"VAR's lin0: warm-up over {t.warmup_iters:,} steps from x{t.warmup_start:g}, then linear decay to "
                 f"x{t.lr_end:g}")
    name = {"adam": "Adam", "adamw": "AdamW"}.get(t.optimizer, t.optimizer)
    return (f"{name} lr {t.lr:g} (betas {', '.join(f'{b:g}' for b in t.betas)}, weight decay {t.weight_decay:g}); "
            f"{steps}; EMA decay {t.ema_decay:g}" + (f"; gradient clipping at {t.grad_clip:g}" if t.grad_clip else ""))


def describe_validation(cfg, found: Preflight) -> str:
    t = cfg.train
    if not found.validation:
        return "none (train.val_every=0)" if t.val_every <= 0 else "none (train.val_images=0)"
    when = (["at the start"] if t.val_at_start else []) + [f"every {t.val_every:,} steps", "at the end"]
    sets = ", ".join(f"{name} ({n} images)" for name, n in found.validation)
    return (f"{sets} under {cfg.eval.root}, EMA weights, batch {cfg.eval.batch_size}, LQ and GT resized to the "
            f"model's validation size, PSNR/SSIM on RGB; {', '.join(when)}")


GPU_SIZES_GB = (24, 40, 80)   # common single-GPU memories: RTX 3090/4090, A100 40 GB, A100/H100 80 GB
CUDA_RESERVE_GIB = 1.5        # the CUDA context, kernels' workspaces and allocator slack, per process


def gpu_fit_lines(state: int, per_image: int, micro: int, checkpointing: bool) -> List[str]:
    """Per common GPU size: the largest micro-batch whose counted memory fits, or that nothing fits (DDP holds a
    full copy of the state on every GPU; only sharding it, e.g. FSDP, would help then)."""
    lines = []
    for gb in GPU_SIZES_GB:
        usable = gb * GIB - CUDA_RESERVE_GIB * GIB
        fits = int((usable - state) // per_image) if per_image > 0 and usable > state else 0
        if fits >= 1:
            note = ("" if fits >= micro else
                    f" (data.batch_size={micro} does NOT fit: lower it, with gradient accumulation)")
            lines.append(f"{gb} GB GPU: micro-batch up to {fits} ({state / GIB:.1f} GiB state + {fits} x "
                         f"{per_image / GIB:.2f} GiB){note}")
        elif usable > state:
            lines.append(f"{gb} GB GPU: not one image fits ({per_image / GIB:.1f} GiB of activations over "
                         f"{(usable - state) / GIB:.1f} GiB left)"
                         + ("" if checkpointing else "; set train.grad_checkpointing=true"))
        else:
            lines.append(f"{gb} GB GPU: the state alone ({state / GIB:.1f} GiB) does not fit: DDP keeps a full copy "
                         "per GPU; it needs the state sharded (FSDP/ZeRO, not implemented here) or a larger GPU")
    return lines


def estimate_memory(cfg, stage: StageSpec, batch: BatchPlan, precision: str, device: torch.device) -> List[str]:
    """Bytes a training step holds per device: weights, gradients, Adam and EMA states, plus the activations of
    one micro-batch saved for backward (frozen loss networks and the data loader's buffers are not counted);
    then the largest micro-batch per common GPU size. Lines (the first is the summary)."""
    if stage.estimate_memory is None:
        return [f"not estimated (the {stage.name} stage gives no estimate)"]
    t0 = time.perf_counter()
    state, per_image, pb = stage.estimate_memory(cfg, batch.micro_batch, precision)
    total = state + batch.micro_batch * per_image
    text = (f"~{total / GIB:.1f} GiB per device = {state / GIB:.1f} GiB weights/gradients/Adam/EMA "
            f"({pb['trainable_params'] / 1e6:.1f} M trainable, {pb['frozen_params'] / 1e6:.1f} M frozen) + "
            f"{batch.micro_batch} x {per_image / GIB:.2f} GiB activations per image ({precision}, "
            f"activation checkpointing {'on' if cfg.train.grad_checkpointing else 'off'}; counted in "
            f"{time.perf_counter() - t0:.0f} s)")
    if device.type == "cuda":
        have = torch.cuda.get_device_properties(device).total_memory
    else:
        have = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if total > have:
        text += (f"; MORE than this machine's {have / GIB:.0f} GiB ({device_name(device)}): lower data.batch_size "
                 "(with train.global_batch_size set, gradient accumulation keeps the global batch)"
                 + ("" if cfg.train.grad_checkpointing else " or set train.grad_checkpointing=true"))
    return [text] + gpu_fit_lines(state, per_image, batch.micro_batch, bool(cfg.train.grad_checkpointing))


def plan_run(stage: str, cfg, world_size: int = 1, overwrite: bool = False, memory: bool = True,
             log: Optional[Callable[[str], None]] = None) -> List[str]:
    """The checks of a real start and the plan, as lines; raises the one-line error a real start would raise."""
    spec = method_of(cfg)
    stage_spec = spec.stage(stage)
    stage_spec.configure(cfg)
    found = check_run_inputs(cfg, stage_spec)
    t = cfg.train
    device = resolve_device(t.device)
    precision = resolve_precision(t.precision, device)
    batch = plan_batches(t.global_batch_size, cfg.data.batch_size, world_size)
    owner = lock_owner(t.output_dir) if os.path.isdir(t.output_dir) else None
    if owner is not None:
        raise RunFolderError(f"{t.output_dir} is in use by another training run ({owner})")
    decision = open_run_folder(t.output_dir, cfg, overwrite=overwrite, dry_run=True)
    steps_left = t.total_iters - decision.resume_step
    lines = [
        f"{spec.title} {stage} ({stage_spec.description}) dry run: every check passed; nothing was built or "
        "trained",
        f"training data: {len(found.dataset):,} samples per nominal epoch under {cfg.data.root}"
        + (f" (tasks: {', '.join(cfg.data.tasks)})" if getattr(found.dataset, "tasks", None) else ""),
        f"validation: {describe_validation(cfg, found)}",
        *[f"weights: {w}" for w in found.weights],
        f"output folder: {decision.describe()}",
        f"batch: {batch.describe()}",
        f"steps: {t.total_iters:,} ({steps_left:,} to go), {steps_left * batch.global_batch:,} images; "
        f"checkpoint every {t.save_every:,} steps (last {t.keep_last} kept)",
        f"schedule: {describe_schedule(t)}",
        f"precision: {precision} on this machine's {device} ({device_name(device)}; train.precision={t.precision}, "
        f"native bf16: {'yes' if native_bf16(device) else 'no'})",
    ]
    if memory:
        if log:
            log("estimating the memory of a training step on fake tensors (--no-memory skips it) ...")
        first, *per_gpu = estimate_memory(cfg, stage_spec, batch, precision, device)
        lines += [f"memory: {first}"] + [f"memory per GPU: {line}" for line in per_gpu]
    notes = batch.notes(stage_spec, t.lr, stage_spec.released_size(cfg)) + found.notes + decision.notes
    return lines + [f"note: {n}" for n in notes]
