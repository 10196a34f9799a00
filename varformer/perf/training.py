"""Cost of a training step of any registered method (``varformer benchmark train --method NAME --stage S``).

- Real optimiser steps of the stage's demo recipe (``MethodSpec.demo``: a small model, random init, its perceptual
  term off where the recipe says so because its weights cannot be downloaded offline): the task the stage builds,
  the trainer's optimiser over its parameter groups (``training.optim``), one batch of the recipe's training data,
  forward under ``runtime.autocast``, backward, update; seconds per step and peak memory from
  ``perf.measure.interleaved_timings``. Stages before it in the recipe are built with random weights and exported,
  and carried over as the demo carries them (e.g. a stage-1 file for stage 2).
- The activation memory of the stage's shipped full recipe (``StageSpec.recipe``), counted on fake tensors by the
  stage's ``estimate_memory`` (nothing computed, nothing allocated), in fp32 and bf16, with and without activation
  checkpointing; a stage without an estimate says so.
"""
from __future__ import annotations

import os
import tempfile
from typing import Callable, List, Optional, Sequence

import torch

from varformer.config import load_config
from varformer.methods import registry
from varformer.methods.activation_checkpointing import enable_activation_checkpointing
from varformer.methods.api import MethodSpec, StageSpec, settings_from_section
from varformer.perf.measure import interleaved_timings, process_settings
from varformer.runtime import autocast, resolve_device, resolve_precision
from varformer.training.optim import build_optimizer
from varformer.training.sampling import build_loader

GIB = 2 ** 30


def default_stage(spec: MethodSpec) -> str:
    """The last stage of the method's demo recipe (its last stage when it has no demo)."""
    return spec.demo.stages[-1][0] if spec.demo and spec.demo.stages else spec.stages[-1].name


def _demo_config(spec: MethodSpec, stage: str, common: List[str], tmp: str, log):
    """The demo recipe's config of ``stage``, with the stages before it built (random init), exported and carried
    over as the demo carries them; None when the demo recipe has no config for the stage."""
    recipes = list(spec.demo.stages) if spec.demo else []
    names = [name for name, _ in recipes]
    if stage not in names:
        return None, ""
    previous: Optional[str] = None

    def config(name: str, recipe: str):
        cfg = load_config(recipe, common + (spec.demo.carry(name, previous) if previous else []))
        spec.stage(name).configure(cfg)
        return cfg

    for name, recipe in recipes[:names.index(stage)]:
        log(f"{name} of the demo recipe ({recipe}) built with random weights and exported for {stage}")
        task = spec.stage(name).build_task(config(name, recipe), log)
        previous = task.export(task.model, os.path.join(tmp, name)) or previous
    return config(stage, dict(recipes)[stage]), dict(recipes)[stage]


def _small_step_line(spec: MethodSpec, stage: StageSpec, batch: Optional[int], precision: str, device: str,
                     steps: int, log) -> str:
    dev = resolve_device(device)
    precision = resolve_precision(precision, dev)
    with tempfile.TemporaryDirectory() as tmp:
        common = [f"train.device={dev}", f"train.precision={precision}", "train.val_every=0",
                  f"train.output_dir={os.path.join(tmp, 'run')}", "data.num_workers=0",
                  "data.persistent_workers=false"] + ([f"data.batch_size={batch}"] if batch else [])
        cfg, recipe = _demo_config(spec, stage.name, common, tmp, log)
        if cfg is None:
            return (f"{spec.title} {stage.name}: no demo recipe for this stage, so no small steps (demo stages: "
                    f"{', '.join(n for n, _ in (spec.demo.stages if spec.demo else ())) or 'none'})")
        torch.manual_seed(cfg.train.seed)
        task = stage.build_task(cfg, log).to(dev)
        if cfg.train.grad_checkpointing:
            enable_activation_checkpointing(task.model, task.checkpointed_modules())
        data = next(iter(build_loader(stage.training_data(cfg), cfg.data.batch_size, seed=cfg.train.seed)))
        data = task.move_batch(data, dev)
        optimizer = build_optimizer(task.parameter_groups(), cfg.train, dev)
        task.train()
        terms: List[str] = []

        def step() -> None:
            optimizer.zero_grad(set_to_none=True)
            with autocast(dev, precision):
                out = task(data)
            out.loss.backward()
            optimizer.step()
            terms[:] = list(out.terms)

        log(f"{spec.name} {stage.name} ({recipe}): 1 warm-up + {steps} timed steps")
        t = interleaved_timings({"step": step}, dev, warmup=1, repeat=steps, with_memory=True)["step"]
        n = task.batch_size(data)
        what = "peak allocated" if dev.type == "cuda" else "peak process RSS"
        settings = settings_from_section(spec.settings, cfg.model)
        return (f"{spec.title} {stage.name}, demo recipe {recipe} ({spec.describe(settings)}, random init, batch {n}, "
                f"{precision}, {dev}): {t.wall_s:.2f} s/step, {n / t.wall_s:.3f} images/s, {what} "
                f"{t.peak_mem_bytes / GIB:.2f} GiB; the recipe's loss terms: {', '.join(terms) or 'none'}")


def _estimate_lines(spec: MethodSpec, stage: StageSpec, overrides: Sequence[str], log) -> List[str]:
    if stage.estimate_memory is None or not stage.recipe:
        why = "the stage gives no estimate" if stage.estimate_memory is None else "no full recipe ships for it"
        return [f"{spec.title} {stage.name}, full-size activation memory: none ({why})"]
    cfg = load_config(stage.recipe, list(overrides))
    stage.configure(cfg)
    micro = cfg.data.batch_size
    what = spec.describe(settings_from_section(spec.settings, cfg.model))
    lines = []
    for ckpt in (False, True):
        cfg.train.grad_checkpointing = ckpt
        per_image, state, pb = {}, 0, {}
        for precision in ("fp32", "bf16"):
            log(f"{spec.name} {stage.name}, {stage.recipe} ({precision}, activation checkpointing {ckpt}): "
                "activations on fake tensors, nothing computed")
            state, per_image[precision], pb = stage.estimate_memory(cfg, micro, precision)
        lines.append(f"{spec.title} {stage.name}, shipped recipe {stage.recipe} ({what}), activation checkpointing "
                     f"{'on ' if ckpt else 'off'}: saved activations per image {per_image['fp32'] / GIB:.1f} GiB "
                     f"fp32, {per_image['bf16'] / GIB:.1f} GiB bf16 autocast; weights/grads/Adam/EMA "
                     f"{state / GIB:.1f} GiB ({pb['trainable_params'] / 1e6:.0f} M trainable, "
                     f"{pb['frozen_params'] / 1e6:.0f} M frozen); the recipe's {micro} per device: "
                     f"~{(micro * per_image['fp32'] + state) / GIB:.0f} GiB fp32, "
                     f"~{(micro * per_image['bf16'] + state) / GIB:.0f} GiB bf16")
    return lines


def run_training_benchmark(method: Optional[str] = None, stage: Optional[str] = None, batch: Optional[int] = None,
                           precision: str = "auto", device: str = "auto", steps: int = 2, small: bool = True,
                           estimate: bool = True, threads: Optional[int] = None,
                           estimate_overrides: Sequence[str] = (),
                           log: Callable[[str], None] = lambda m: None) -> List[str]:
    """Report lines: seconds per step, images/s and peak memory of real optimiser steps of the stage's demo recipe
    (``batch``: its data.batch_size unless given) on ``device``, then the full recipe's activation memory per image
    (``estimate_overrides``: changes of that recipe, e.g. a small model in tests). ``method``: the registry's
    default when None; ``stage``: the last stage of its demo recipe when None."""
    if (batch is not None and batch < 1) or steps < 1:
        raise ValueError("need batch >= 1 and steps >= 1")
    spec = registry.get(method or registry.DEFAULT)
    stage_spec = spec.stage(stage or default_stage(spec))
    with process_settings(threads=threads, allow_tf32=False):   # fp32 means fp32; all restored afterwards
        lines = [_small_step_line(spec, stage_spec, batch, precision, device, steps, log)] if small else []
        if estimate:
            lines += _estimate_lines(spec, stage_spec, estimate_overrides, log)
    return lines
