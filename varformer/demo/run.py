"""``varformer demo``: build the offline demo benchmark, evaluate restorers on it under both protocols, print a table.

``run_demo`` evaluates a list of named restorers: the identity baseline always, plus whatever each step in
``train_steps`` returns (a step receives the demo folder and returns a trained ``Restorer``). ``training_step``
is the short training run: the recipes ``configs/demo_stage{1,2}.yaml`` (a small model on a random-init VAR
backbone; docs/demo.md) with this run's folder and device, for the recipes' fixed numbers of steps (seeded, batch 1,
fp32: the same table on every machine, within float noise) or, as an option, for a wall-clock budget (then the
table depends on the machine's speed); ``pretrained_restorers`` evaluates official or user weights found under
``checkpoints/`` instead. A layer on top of training, evaluation and inference: nothing
in them knows about the demo.
"""
from __future__ import annotations

import glob
import os
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torchvision.utils import save_image

from varformer.config import load_config
from varformer.data.benchmark_data import benchmark_dataset
from varformer.data.catalog import demo_benchmarks
from varformer.data.demo_set import DEMO_TASKS, DemoSpec, ensure_demo
from varformer.data.resize import resize_bilinear
from varformer.evaluation import EvalResult, check_output_dir, evaluate
from varformer.evaluation.report import TASK_COLUMNS
from varformer.files import atomic_output, claim_folder, folder_entries, mark_folder
from varformer.inference import Restorer, identity_restorer, load_restorer, model_restorer
from varformer.model import load_varformer
from varformer.restorevar import load_restorevar
from varformer.runtime import resolve_device
from varformer.training.run import run_training

DEMO_PROTOCOLS = ("paper", "full")
TrainStep = Callable[[str], Restorer]


@dataclass
class DemoOutcome:
    demo_dir: str
    build_seconds: float
    results: Dict[Tuple[str, str], EvalResult]   # (restorer name, protocol) -> result
    table: str
    trained: bool


def evaluate_restorers(restorers: Sequence[Restorer], demo_dir: str, protocols: Sequence[str] = DEMO_PROTOCOLS,
                       output_dir: Optional[str] = None, overwrite: bool = False, batch_size: int = 4,
                       progress: bool = True, log: Optional[Callable[[str], None]] = print,
                       tasks: Sequence[str] = DEMO_TASKS) -> Dict[Tuple[str, str], EvalResult]:
    benches = [(name, demo_dir) for name in demo_benchmarks() if name[len("demo-"):] in tasks]
    out_dirs = {(r.name, p): (None if output_dir is None else os.path.join(output_dir, r.name, p))
                for r in restorers for p in protocols}
    for d in out_dirs.values():  # refuse before any work
        if d is not None:
            check_output_dir(d, overwrite)
    results = {}
    for r in restorers:
        for p in protocols:
            results[(r.name, p)] = evaluate(r, benches, p, output_dir=out_dirs[(r.name, p)], batch_size=batch_size,
                                            overwrite=overwrite, progress=progress, log=None)
            if log:
                log(f"evaluated {r.name} under protocol '{p}' in {results[(r.name, p)].summary['seconds']:.1f} s")
    return results


def combined_table(results: Dict[Tuple[str, str], EvalResult]) -> str:
    """One row per (restorer, protocol), one PSNR/SSIM column per demo task (the paper's column order)."""
    tasks = [(t, label) for t, label in TASK_COLUMNS if t in DEMO_TASKS]
    lines = ["| Restorer | Protocol | " + " | ".join(label for _, label in tasks) + " |",
             "|---|---|" + "---|" * len(tasks)]
    for (name, proto), res in results.items():
        benches = res.summary["benchmarks"]
        cells = []
        for t, _ in tasks:
            b = benches.get(f"demo-{t}")
            cells.append("–" if b is None else f"{b['psnr']:.2f}/{b['ssim']:.3f}")
        lines.append(f"| {name} | {proto} | " + " | ".join(cells) + " |")
    captions = {p: res.summary["caption"] for (_, p), res in results.items()}
    lines += [""] + [f"- `{p}`: {c}." for p, c in captions.items()]
    lines.append("- PSNR (dB) / SSIM on the demo test split (scikit-image photographs: astronaut, coffee, "
                 "motorcycle; synthetic degradations). Published numbers are on real benchmarks and not shown.")
    return "\n".join(lines)


DEMO_OUTPUT_KIND = "demo results"   # the -o folder's marker (varformer.files.mark_folder)


def _earlier_demo_output(folder: str) -> bool:
    """An unmarked folder an earlier version's demo wrote: its grid, and <restorer>/<protocol>/ results alone."""
    for name in folder_entries(folder):
        sub = os.path.join(folder, name)
        if name == "demo_grid.png":
            continue
        if not os.path.isdir(sub) or not all(os.path.isfile(os.path.join(sub, p, "summary.json"))
                                             for p in folder_entries(sub)):
            return False
    return True


def check_demo_output(output_dir: str, overwrite: bool, protocols: Sequence[str] = DEMO_PROTOCOLS) -> None:
    """``demo -o``, checked before anything is built or trained: a new or empty folder, or an earlier demo's; one
    holding results only with ``overwrite`` (a folder of the user's never)."""
    claim_folder(output_dir, DEMO_OUTPUT_KIND, "-o", recognized=_earlier_demo_output)
    found = [os.path.join(output_dir, r, p) for r in folder_entries(output_dir) for p in protocols
             if os.path.isdir(os.path.join(output_dir, r, p)) and folder_entries(os.path.join(output_dir, r, p))]
    for d in found:
        check_output_dir(d, overwrite)  # refuses results without --overwrite, in one line


def run_demo(cache_dir: Optional[str] = None, output_dir: Optional[str] = None, overwrite: bool = False,
             device: str = "auto", spec: Optional[DemoSpec] = None, train_steps: Sequence[TrainStep] = (),
             batch_size: int = 4, progress: bool = True, log: Callable[[str], None] = print,
             protocols: Sequence[str] = DEMO_PROTOCOLS, tasks: Sequence[str] = DEMO_TASKS) -> DemoOutcome:
    if output_dir is not None:  # before the demo set is built or anything trained
        check_demo_output(output_dir, overwrite, protocols)
    t0 = time.perf_counter()
    demo_dir = ensure_demo(cache_dir, spec, log=log)
    build_seconds = time.perf_counter() - t0
    if output_dir is not None:
        mark_folder(output_dir, DEMO_OUTPUT_KIND)
    restorers: List[Restorer] = [identity_restorer(device)]
    for step in train_steps:
        restorers.append(step(demo_dir))
    results = evaluate_restorers(restorers, demo_dir, protocols, output_dir, overwrite, batch_size, progress, log,
                                 tasks)
    return DemoOutcome(demo_dir, build_seconds, results, combined_table(results), trained=bool(train_steps))


# ---------------------------------------------------------------------------------------------------------------
# The short training run (or the user's / official weights when present)
# ---------------------------------------------------------------------------------------------------------------
DEMO_MODEL_NOTE = ("demo model: VQVAE/U-Net width 32, VAR depth 2, RANDOM-INIT VAR backbone (no pretrained VAR "
                   "weights offline). It shows the pipeline working end to end, not the paper's numbers.")
WEIGHT_PATTERNS = ("net_g_last.pth", "varformer*.pt", "varformer*.safetensors")
VGG19_FILE = os.path.join("checkpoints", "vgg19-dcbb9e9d.pth")


def find_trained_weights(folder: str = "checkpoints") -> List[str]:
    """Official (``net_g_last.pth``) or user VarFormer weights under ``folder`` (our ``varformer*.pt`` files)."""
    found: List[str] = []
    for pattern in WEIGHT_PATTERNS:
        found += sorted(glob.glob(os.path.join(folder, pattern)))
    return found


def demo_train_config(stage: int, demo_dir: str, out_dir: str, device: torch.device, steps: Optional[int] = None,
                      seconds: Optional[float] = None, extra: Sequence[str] = (), val_images: int = 5):
    """The recipe ``configs/demo_stage{stage}.yaml`` with this run's data folder, output folder and device, for
    ``steps`` optimiser steps (None: the recipe's ``train.total_iters``) or, with ``seconds``, for a wall-clock
    budget. The same recipe on every device (batch 1, fp32): the table must not depend on the machine."""
    root = os.path.join(demo_dir, "train", "clean" if stage == 1 else "")
    run = [f"data.root={root.rstrip(os.sep)}", f"eval.root={demo_dir}", f"train.output_dir={out_dir}",
           "train.resume=none", f"train.device={device}", f"train.val_images={val_images}"]
    if seconds is not None:
        run += ["train.total_iters=100000", f"train.max_seconds={seconds}", "train.save_every=100000"]
    elif steps is not None:
        run += [f"train.total_iters={steps}"]
    if os.path.isfile(VGG19_FILE):  # no VGG19 weights offline; with them the official perceptual term is used
        run += ["train.loss.perceptual=1.0", f"train.loss.vgg_path={VGG19_FILE}"]
    return load_config(f"demo_stage{stage}.yaml", run + list(extra))


def _stage_length(steps: Optional[Tuple[int, int]], seconds: Optional[Tuple[float, float]], stage_index: int):
    """How long one stage trains, as config-builder keywords: a wall-clock budget, else a number of steps (None: the
    recipe's)."""
    if seconds:
        return dict(seconds=seconds[stage_index])
    return dict(steps=steps[stage_index] if steps else None)


def training_step(run_dir: str, device: str = "auto", steps: Optional[Tuple[int, int]] = None,
                  seconds: Optional[Tuple[float, float]] = None, log: Callable[[str], None] = print,
                  grid_path: Optional[str] = None, val_images: int = 5) -> TrainStep:
    """A ``TrainStep`` that trains the small demo model (stage 1 then stage 2) on the demo training split and
    returns it as a ``Restorer``: for ``steps`` = (stage 1, stage 2) optimiser steps (None: the recipes'), or
    for ``seconds`` = (stage 1, stage 2) of wall-clock time. It logs the loss curve and validation PSNR."""

    def step(demo_dir: str) -> Restorer:
        dev = resolve_device(device)
        log(DEMO_MODEL_NOTE)
        s1_dir, s2_dir = os.path.join(run_dir, "stage1"), os.path.join(run_dir, "stage2")
        cfg1 = demo_train_config(1, demo_dir, s1_dir, dev, **_stage_length(steps, seconds, 0))
        cfg2 = demo_train_config(2, demo_dir, s2_dir, dev, **_stage_length(steps, seconds, 1), val_images=val_images)
        how = (f"for {seconds[0]:.0f} s and {seconds[1]:.0f} s of wall-clock time (the table depends on this "
               "machine's speed)" if seconds else f"for {cfg1.train.total_iters} and {cfg2.train.total_iters} steps "
               f"(seeded, batch 1, fp32: the same table on every machine)")
        log(f"training stage 1 then stage 2 on {dev} {how}; the log lines show the time left (eta)")
        log(f"stage 1 (logs: {s1_dir}) ...")
        r1 = run_training("stage1", cfg1, progress=False, print_config=False)
        log(f"stage 2 (logs: {s2_dir}) ...")
        cfg2.model.stage1_weights = r1.checkpoint
        r2 = run_training("stage2", cfg2, progress=False, print_config=False)
        log(summarise_history(1, r1.history))
        log(summarise_history(2, r2.history))
        model = load_varformer(r2.export, expect_stage=2)
        restorer = model_restorer(model, dev, "fp32", name=f"demo-varformer ({r2.step} steps)")
        if grid_path:
            save_demo_grid(restorer, demo_dir, grid_path)
            log(f"side-by-side grid (input | output | target, one row per task): {grid_path}")
        return restorer

    return step


RESTOREVAR_MODEL_NOTE = ("demo RestoreVAR: VQVAE width 32, VAR depth 2, scales up to 8x8 (128x128 inputs, tiled), a "
                         "2-layer refiner, RANDOM-INIT VQVAE and VAR (no pretrained weights offline). It shows the "
                         "pipeline working end to end, not the paper's numbers.")


def demo_restorevar_config(stage: int, demo_dir: str, out_dir: str, device: torch.device,
                           steps: Optional[int] = None, seconds: Optional[float] = None,
                           extra: Sequence[str] = (), val_images: int = 5):
    """The recipe ``configs/demo_restorevar_stage{stage}.yaml`` with this run's folders and device, for ``steps``
    optimiser steps (None: the recipe's ``train.total_iters``) or, with ``seconds``, for a wall-clock budget."""
    run = [f"data.root={os.path.join(demo_dir, 'train')}", f"eval.root={demo_dir}", f"train.output_dir={out_dir}",
           "train.resume=none", f"train.device={device}", f"train.val_images={val_images}"]
    if seconds is not None:  # a time budget, not a length: flat lr
        run += ["train.total_iters=100000", f"train.max_seconds={seconds}", "train.save_every=100000",
                "train.warmup_iters=0", "train.lr_schedule=multistep", "train.milestones=[1000000]"]
    elif steps is not None:
        run += [f"train.total_iters={steps}", f"train.save_every={steps}"]
    return load_config(f"demo_restorevar_stage{stage}.yaml", run + list(extra))


def restorevar_training_step(run_dir: str, device: str = "auto", steps: Optional[Tuple[int, int]] = None,
                             seconds: Optional[Tuple[float, float]] = None,
                             log: Callable[[str], None] = print) -> TrainStep:
    """A ``TrainStep`` that trains the small demo RestoreVAR (stage 1, the transformer, then stage 2, the refiner)
    on the demo training split and returns it as a ``Restorer`` (128x128 input: the protocols tile): for ``steps``
    = (stage 1, stage 2) optimiser steps (None: the recipes', seeded, fp32: the same model on every machine), or
    for ``seconds`` of wall-clock time."""

    def step(demo_dir: str) -> Restorer:
        dev = resolve_device(device)
        log(RESTOREVAR_MODEL_NOTE)
        s1_dir, s2_dir = os.path.join(run_dir, "stage1"), os.path.join(run_dir, "stage2")
        cfg1 = demo_restorevar_config(1, demo_dir, s1_dir, dev, **_stage_length(steps, seconds, 0))

        def how(cfg, stage_index: int) -> str:
            return f"{seconds[stage_index]:.0f} s" if seconds else f"{cfg.train.total_iters} steps"

        log(f"training RestoreVAR stage 1 for {how(cfg1, 0)} on {dev} (logs: {s1_dir}) ...")
        r1 = run_training("stage1", cfg1, progress=False, print_config=False)
        cfg2 = demo_restorevar_config(2, demo_dir, s2_dir, dev, **_stage_length(steps, seconds, 1),
                                      extra=[f"model.stage1_weights={r1.export}"])
        log(f"training RestoreVAR stage 2 for {how(cfg2, 1)} on {dev} (logs: {s2_dir}) ...")
        r2 = run_training("stage2", cfg2, progress=False, print_config=False)
        log(summarise_history(1, r1.history))
        log(summarise_history(2, r2.history, "demo test split resized to 128x128, Lanczos"))
        model = load_restorevar(r2.export, expect_refiner=True)
        return model_restorer(model, dev, "fp32", name=f"demo-restorevar ({r1.step}+{r2.step} steps)",
                              input_size=model.image_size)

    return step


def summarise_history(stage: int, history: List[Dict[str, float]], val_what: str = "paper protocol, 256x256") -> str:
    losses = [(h["step"], h["loss/total"]) for h in history if "loss/total" in h]
    vals = [h for h in history if "val/psnr" in h]
    lines = [f"stage {stage} training loss (step: mean over the steps since the last log): "
             + ", ".join(f"{s}: {v:.4f}" for s, v in losses)]
    if vals:
        lines.append(f"stage {stage} validation PSNR ({val_what}; step: model / identity): "
                     + ", ".join(f"{h['step']}: {h['val/psnr']:.2f} / {h.get('val/psnr_input', float('nan')):.2f}"
                                 for h in vals))
        if any("val/loss" in h for h in vals):
            lines.append(f"stage {stage} validation loss (the image terms of the training loss on the same "
                         "held-out images; step: loss): "
                         + ", ".join(f"{h['step']}: {h['val/loss']:.4f}" for h in vals if "val/loss" in h))
    return "\n".join(lines)


def save_demo_grid(restorer: Restorer, demo_dir: str, path: str) -> None:
    """One test image per task at 256x256 (paper protocol): input | output | target."""
    rows = []
    for name in demo_benchmarks():
        item = benchmark_dataset(name, demo_dir)[0]
        lq, gt = (resize_bilinear(item[k].float(), 256).clamp(0, 1)[None] for k in ("lq", "gt"))
        rows += [lq[0], restorer(lq).cpu()[0], gt[0]]
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic_output(path) as tmp:
        save_image(torch.stack(rows), tmp, format="png", nrow=3, padding=4, pad_value=1.0)


def pretrained_restorers(paths: Sequence[str], device: str = "auto") -> List[TrainStep]:
    """Steps that evaluate existing weights instead of training."""
    return [lambda demo_dir, p=p: load_restorer(p, device) for p in paths]
