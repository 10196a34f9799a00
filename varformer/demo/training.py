"""The demo's short training run, for any registered method: its ``DemoRecipe`` (``MethodSpec.demo``) names the
shipped configs to train in order; each stage's config gets this run's demo folder, output folder and device, and
what the recipe carries over from the previous stage's export (``carry``). The last stage's export, loaded through
the registry, is the demo's restorer.

    train = DemoTraining(registry.get(name), "runs/demo", device="cpu")   # the recipes' fixed, seeded steps
    restorer = train(demo_dir)          # a ``Restorer``; ``train.runs`` holds each stage's history (the report)

By default every stage trains its config's ``train.total_iters`` steps, seeded, at the config's batch and
precision (fp32 in the shipped demo recipes): every machine computes the same thing and prints the same table.
``steps`` changes the lengths; ``seconds`` trains for a wall-clock budget instead (then the table depends on the
machine's speed).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

import torch

from varformer.config import load_config, method_of
from varformer.data.roots import DEMO_SOURCE, is_named_source
from varformer.errors import CheckpointMismatchError, ConfigError
from varformer.inference import Restorer, model_restorer
from varformer.inference.restorer import with_scale
from varformer.methods import registry
from varformer.methods.api import MethodSpec
from varformer.runtime import resolve_device
from varformer.training.run import run_training
from varformer.training.trainer import FitResult

# a wall-clock budget is not a length: a flat learning rate (a schedule over total_iters would never decay)
TIME_BUDGET_OVERRIDES = ["train.total_iters=100000000", "train.save_every=100000000", "train.warmup_iters=0",
                         "train.lr_schedule=multistep", "train.milestones=[1000000000]"]


@dataclass
class StageRun:
    """One trained stage: its name, the shipped config it ran, its output folder and the trainer's result."""
    stage: str
    config_file: str
    out_dir: str
    result: FitResult


def demo_recipe(spec: MethodSpec):
    if spec.demo is None:
        have = [s.name for s in registry.methods().values() if s.demo is not None]
        raise ConfigError(f"{spec.title} has no demo recipe (MethodSpec.demo); methods with one: {', '.join(have)}")
    return spec.demo


def demo_train_config(spec: MethodSpec, stage_index: int, demo_dir: str, out_dir: str, device: torch.device,
                      steps: Optional[int] = None, seconds: Optional[float] = None, extra: Sequence[str] = (),
                      val_images: Optional[int] = None):
    """The recipe's config of stage ``stage_index`` with this run's demo folder (a ``demo:...`` data root is
    resolved in it), output folder and device, for ``steps`` optimiser steps (None: the config's
    ``train.total_iters``) or, with ``seconds``, for a wall-clock budget; ``extra``: overrides applied last."""
    stage, config_file = demo_recipe(spec).stages[stage_index]
    run = [f"eval.root={demo_dir}", f"train.output_dir={out_dir}", "train.resume=none", f"train.device={device}"]
    if val_images is not None:
        run.append(f"train.val_images={val_images}")
    if seconds is not None:
        run += TIME_BUDGET_OVERRIDES + [f"train.max_seconds={seconds}"]
    elif steps is not None:
        run += [f"train.total_iters={steps}", f"train.save_every={steps}"]
    cfg = load_config(config_file, run + list(extra))
    if method_of(cfg) is not spec:
        raise ConfigError(f"the {spec.title} demo recipe names {config_file}, a config of the method "
                          f"'{method_of(cfg).name}'")
    root = str(cfg.data.root or "")
    if is_named_source(root):  # the demo set of this run, which may live in another cache than the default one
        cfg.data.root = os.path.join(demo_dir, root[len(DEMO_SOURCE) + 1:].strip("/"))
    return cfg


def stage_lengths(spec: MethodSpec, steps: Optional[Sequence[int]], seconds: Optional[float]) -> List[Dict]:
    """Per stage, the config builder's length keywords: a share of ``seconds`` (the recipe's ``time_split``), else
    ``steps`` (one per stage; None: the configs' own)."""
    recipe = demo_recipe(spec)
    n = len(recipe.stages)
    if seconds is not None:
        return [dict(seconds=seconds * share) for share in recipe.shares()]
    if steps is not None and len(steps) != n:
        raise ConfigError(f"--steps takes one number per stage of the {spec.title} demo ({n}: "
                          f"{', '.join(s for s, _ in recipe.stages)}), got {len(steps)}")
    return [dict(steps=steps[i] if steps is not None else None) for i in range(n)]


class DemoTraining:
    """A ``TrainStep`` of ``varformer.demo.run.run_demo``: trains the method's demo recipe on the demo training
    split and returns the last stage's export as a ``Restorer`` (fp32); ``runs`` then holds every stage's run."""

    def __init__(self, spec: MethodSpec, run_dir: str, device: str = "auto", steps: Optional[Sequence[int]] = None,
                 seconds: Optional[float] = None, log: Callable[[str], None] = print,
                 val_images: Optional[int] = None):
        self.spec, self.run_dir, self.device, self.log, self.val_images = spec, run_dir, device, log, val_images
        self.recipe = demo_recipe(spec)
        self.seconds = seconds
        self.lengths = stage_lengths(spec, steps, seconds)  # a wrong --steps count fails before any work
        self.runs: List[StageRun] = []

    def _how_long(self, cfgs) -> str:
        names = [s for s, _ in self.recipe.stages]
        if self.seconds is not None:
            return ("for " + ", ".join(f"{n} {length['seconds']:.0f} s" for n, length in zip(names, self.lengths))
                    + " of wall-clock time (the table depends on this machine's speed)")
        return ("for " + ", ".join(f"{n} {cfg.train.total_iters} steps" for n, cfg in zip(names, cfgs))
                + f" (seeded, batch {cfgs[-1].data.batch_size}, {cfgs[-1].train.precision}: the same table on "
                  "every machine)")

    def __call__(self, demo_dir: str) -> Restorer:
        dev = resolve_device(self.device)
        if self.recipe.model:
            self.log(f"demo model: {self.recipe.model}")
        out_dirs = [os.path.join(self.run_dir, stage) for stage, _ in self.recipe.stages]
        # every config is built (and checked) before the first stage trains
        cfgs = [demo_train_config(self.spec, i, demo_dir, out_dirs[i], dev, val_images=self.val_images, **length)
                for i, length in enumerate(self.lengths)]
        self.log(f"training the {self.spec.title} demo on {dev} {self._how_long(cfgs)}; the log lines show the "
                 "time left (eta)")
        self.runs = []
        previous: Optional[str] = None
        for i, (stage, config_file) in enumerate(self.recipe.stages):
            cfg = cfgs[i]
            if previous is not None:
                carried = self.recipe.carry(stage, previous)
                cfg = demo_train_config(self.spec, i, demo_dir, out_dirs[i], dev, val_images=self.val_images,
                                        extra=carried, **self.lengths[i])
            self.log(f"{stage} ({config_file}; logs: {out_dirs[i]}) ...")
            result = run_training(stage, cfg, progress=False, print_config=False)
            if result.export is None:
                raise CheckpointMismatchError(f"the {self.spec.title} demo's {stage} ended '{result.status}' at step "
                                              f"{result.step} without exporting its model")
            self.runs.append(StageRun(stage, config_file, out_dirs[i], result))
            previous = result.export
        for run in self.runs:
            self.log(summarise_history(run.stage, run.result.history))
        info = registry.inspect_weights(previous)
        if info.method is not self.spec:
            raise CheckpointMismatchError(f"the {self.spec.title} demo's last stage exported {previous}, which is "
                                          f"{info.describe()}")
        steps = "+".join(str(r.result.step) for r in self.runs)
        return model_restorer(self.spec.load_model(info), dev, "fp32", name=f"demo-{self.spec.name} ({steps} steps)")


def summarise_history(stage: str, history: List[Dict[str, float]]) -> str:
    """The loss curve and validation PSNR of a stage's run, as log lines."""
    losses = [(h["step"], h["loss/total"]) for h in history if "loss/total" in h]
    vals = [h for h in history if "val/psnr" in h]
    lines = [f"{stage} training loss (step: mean over the steps since the last log): "
             + ", ".join(f"{s}: {v:.4f}" for s, v in losses)]
    if vals:
        lines.append(f"{stage} validation PSNR (the stage's held-out images; step: model / identity): "
                     + ", ".join(f"{h['step']}: {h['val/psnr']:.2f} / {h.get('val/psnr_input', float('nan')):.2f}"
                                 for h in vals))
        if any("val/loss" in h for h in vals):
            lines.append(f"{stage} validation loss (the image terms of the training loss on the same held-out "
                         "images; step: loss): "
                         + ", ".join(f"{h['step']}: {h['val/loss']:.4f}" for h in vals if "val/loss" in h))
    return "\n".join(lines)


def untrained_demo(spec: MethodSpec, device: str = "auto") -> Callable[[str], Restorer]:
    """A ``TrainStep`` for a method whose demo recipe has no training stage (``DemoRecipe.untrained``): its small
    random-init model, run as its method runs it (at the recipe's scale on the demo's same-size pairs), fp32."""
    recipe = demo_recipe(spec)
    if recipe.untrained is None:
        raise ConfigError(f"the {spec.title} demo recipe has neither training stages nor an untrained model")

    def step(demo_dir: str) -> Restorer:
        model = recipe.untrained()
        traits = with_scale(spec.restorer(model), recipe.scale, f"the {spec.title} demo model")
        return model_restorer(model, resolve_device(device), "fp32", name=f"demo-{spec.name} (untrained)",
                              traits=traits)

    return step
