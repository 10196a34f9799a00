"""``varformer reproduce ablations [--method NAME]``: a method's ablation table, one trained model per row, through
its ``MethodSpec.ablations`` (rows, recipes, the published values and where they come from). Every row is trained
by the same trainer (``varformer.training.run.run_training``) and evaluated by the same evaluator, in the
protocol's precision.

- Full size (GPUs): ``<recipes>/<recipe_dir>/<row>.yaml``; rows that start from the first stage share one model
  (given, or trained first from the first-stage recipe); the value is the mean over the spec's benchmarks found
  under the evaluation root.
- Small (``small=True``): the spec's demo recipes with the row's overrides on the demo set, the same number of
  steps for every row, one shared first-stage run; the table shows the demo test split per task. It shows that
  every row trains and restores; its numbers are not the paper's.

Every table says which recipe each row trained and which published value, exact or approximate, it sits beside; a
Δ is printed only where the published value is exact, measured on the same recipe, and our column is complete.
``--dry-run`` (``plan_small``, ``plan_full_ablations``) prints what would run and trains nothing.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

import torch

from varformer.config import RECIPES_DIR, load_config
from varformer.data.catalog import demo_benchmarks
from varformer.data.demo_set import DemoSpec, default_cache_dir, ensure_demo, verify_demo
from varformer.errors import ConfigError
from varformer.evaluation import evaluate, get_protocol
from varformer.evaluation.evaluate import run_precision
from varformer.evaluation.report import TASK_COLUMNS, set_count, short_set
from varformer.files import write_text_atomic
from varformer.inference import identity_restorer, model_restorer
from varformer.methods import registry
from varformer.methods.api import AblationRow, AblationSpec, MethodSpec
from varformer.reproduce.paper import locate_benchmarks
from varformer.runtime import resolve_device
from varformer.training.run import run_training


def ablation_spec(method: Optional[str] = None) -> MethodSpec:
    spec = registry.get(method or registry.DEFAULT)
    if spec.ablations is None:
        have = ", ".join(n for n, s in registry.methods().items() if s.ablations is not None) or "none"
        raise ConfigError(f"{spec.title} has no ablation table here (methods with one: {have})")
    return spec


def get_rows(abl: AblationSpec, names: Optional[Sequence[str]] = None) -> List[AblationRow]:
    return list(abl.rows) if not names else [abl.row(n) for n in names]


def row_recipe(abl: AblationSpec, row: AblationRow) -> str:
    return os.path.join(RECIPES_DIR, abl.recipe_dir, f"{row.name}.yaml")


def _short_path(path: str) -> str:
    return os.path.relpath(path, RECIPES_DIR) if path.startswith(RECIPES_DIR) else path


def why_no_delta(row: AblationRow, cfg) -> Optional[str]:
    """None when our row and the published value measure the same thing (exact value, same recipe), else why not."""
    if not row.exact:
        return "approximate reference"
    if not row.reference_settings:
        return "reference recipe not stated"
    diffs = [f"{k} {v} there, {getattr(cfg.model, k)} here" for k, v in row.reference_settings
             if getattr(cfg.model, k) != v]
    return ("other recipe: " + ", ".join(diffs)) if diffs else None


def paper_cell(row: AblationRow) -> str:
    return f"{row.published:.2f} (exact)" if row.exact else f"~{row.published:.1f} (approx.)"


@dataclass
class RowResult:
    row: AblationRow
    recipe: str                      # the config file the row trained, and what it is
    steps: int
    seconds_per_step: float
    params_m: float                  # trainable parameters, millions
    psnr: Dict[str, Optional[float]]  # benchmark -> mean PSNR
    sets: Dict[str, dict]            # benchmark -> the evaluator's entry (images, expected, ...)
    export: str
    no_delta: Optional[str] = None   # why_no_delta

    def mean(self, names: Sequence[str]) -> Optional[float]:
        vals = [self.psnr[n] for n in names if self.psnr.get(n) is not None]
        return sum(vals) / len(vals) if vals else None


@dataclass
class AblationOutcome:
    results: List[RowResult]
    table: str
    output_dir: str


# ---------------------------------------------------------------------------------------------------------------
def _precision(abl: AblationSpec) -> str:
    chosen = run_precision(None, "auto", get_protocol(abl.protocol))
    return "fp32" if chosen == "auto" else chosen


def _train_and_evaluate(spec: MethodSpec, row: AblationRow, cfg, recipe: str, benchmarks: Sequence[str],
                        eval_root: Optional[str], device: torch.device, progress: bool,
                        log: Callable[[str], None]) -> RowResult:
    abl = spec.ablations
    t0 = time.perf_counter()
    fit = run_training(abl.stage, cfg, progress=progress, print_config=False)
    seconds = time.perf_counter() - t0
    if fit.status != "finished" or fit.export is None:
        raise ConfigError(f"ablation row '{row.name}': training stopped ({fit.status}) at step {fit.step}")
    model = spec.load_model(registry.inspect_weights(fit.export))
    restorer = model_restorer(model, device, _precision(abl), name=f"ablation-{row.name}", traits=spec.restorer(model))
    res = evaluate(restorer, [(n, eval_root) for n in benchmarks], abl.protocol, progress=progress, log=None)
    sets = res.summary["benchmarks"]
    psnr = {n: b["psnr"] for n, b in sets.items()}
    log(f"row '{row.name}': {fit.step} steps in {seconds:.0f} s; PSNR "
        + ", ".join(f"{n} {v:.2f}" for n, v in psnr.items() if v is not None))
    return RowResult(row, f"{_short_path(recipe)}: {abl.describe_recipe(cfg)}", fit.step,
                     seconds / max(fit.step, 1), abl.trainable(model) / 1e6, psnr, sets, fit.export,
                     why_no_delta(row, cfg))


def _write(output_dir: str, results: List[RowResult], table: str, mode: str) -> None:
    os.makedirs(output_dir, exist_ok=True)
    write_text_atomic(os.path.join(output_dir, "ablations.md"), table + "\n")
    write_text_atomic(os.path.join(output_dir, "ablations.json"), json.dumps({"mode": mode, "rows": [
        {"row": r.row.name, "label": r.row.label, "overrides": list(r.row.overrides), "recipe": r.recipe,
         "paper": r.row.published, "paper_exact": r.row.exact, "paper_reference": r.row.reference,
         "delta_withheld": r.no_delta, "steps": r.steps, "seconds_per_step": r.seconds_per_step,
         "trainable_params_m": r.params_m, "psnr": r.psnr, "images": {n: b["images"] for n, b in r.sets.items()},
         "export": r.export} for r in results]}, indent=1))


def _switches(row: AblationRow) -> str:
    return ", ".join(o.split(".", 1)[-1] for o in row.overrides)


def _references(results: List[RowResult], abl: AblationSpec) -> List[str]:
    return [f"Paper column: {abl.source}."] + [f"- {r.row.label}: {r.row.reference}." for r in results]


# ---------------------------------------------------------------------------------------------------------------
# Small mode: the demo set, CPU minutes
# ---------------------------------------------------------------------------------------------------------------
def _demo_root(recipe: str, demo_dir: str) -> str:
    """The recipe's ``demo:<sub>`` root inside the given demo folder."""
    root = str(load_config(recipe).data.root)
    sub = root.split(":", 1)[1] if root.startswith("demo:") else ""
    return os.path.join(demo_dir, sub) if sub else demo_dir


def small_config(recipe: str, demo_dir: str, out_dir: str, steps: int, device: torch.device,
                 extra: Sequence[str] = ()):
    """A shipped demo recipe for ``steps`` steps into ``out_dir`` (no validation, no image logs: every row is
    measured by the evaluator afterwards); on CUDA batch 4 in bf16, as ``varformer demo``."""
    run = [f"data.root={_demo_root(recipe, demo_dir)}", f"eval.root={demo_dir}", f"train.output_dir={out_dir}",
           "train.resume=none", f"train.total_iters={steps}", "train.max_seconds=0", f"train.device={device}",
           "train.val_every=0", "train.val_at_start=false", "train.image_every=0", f"train.save_every={steps}",
           f"train.log_every={max(1, steps // 4)}"]
    if device.type == "cuda":
        run += ["data.batch_size=4", "train.precision=bf16"]
    return load_config(recipe, run + list(extra))


def small_table(results: List[RowResult], benchmarks: Sequence[str], abl: AblationSpec,
                identity: Optional[Dict[str, float]] = None) -> str:
    tasks = [b.split("-", 1)[1] for b in benchmarks]
    labels = dict(TASK_COLUMNS)
    header = (["Row", "model switches", "trained recipe", "paper (for reference; no Δ)"]
              + [labels.get(t, t) for t in tasks] + ["mean", "trainable M", "steps", "s/step"])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in results:
        cells = [f"{r.psnr[b]:.2f}" if r.psnr.get(b) is not None else "–" for b in benchmarks]
        mean = r.mean(benchmarks)
        lines.append("| " + " | ".join([r.row.label, _switches(r.row), r.recipe, paper_cell(r.row)] + cells
                                       + ["–" if mean is None else f"{mean:.2f}", f"{r.params_m:.2f}",
                                          str(r.steps), f"{r.seconds_per_step:.1f}"]) + " |")
    if identity is not None:
        vals = [identity.get(b) for b in benchmarks]
        mean = sum(v for v in vals if v is not None) / max(1, sum(v is not None for v in vals))
        cells = " | ".join("–" if v is None else f"{v:.2f}" for v in vals)
        lines.append(f"| input (identity) | – | – | – | {cells} | {mean:.2f} | – | – | – |")
    counts = ", ".join(set_count(n, b) for n, b in (results[0].sets.items() if results else []))
    lines += ["", f"Small mode: PSNR (dB, protocol `{abl.protocol}`, {_precision(abl)}) on the demo test split per "
              f"task ({counts}), after the same number of steps for every row from one shared first-stage run; "
              "small models on a RANDOM-INIT backbone. It shows every row training and restoring; it does not "
              "reproduce the paper's values (full-size models, the real data, hundreds of thousands of steps), so "
              "no Δ is printed. s/step: the run's wall time (model build and export included) per step.",
              ""] + _references(results, abl)
    return "\n".join(lines)


def plan_small(spec: MethodSpec, output_dir: str, rows: Optional[Sequence[str]] = None, stage1_steps: int = 20,
               steps: int = 40, demo_cache: Optional[str] = None) -> List[str]:
    """``--small --dry-run``: what would run, as lines; nothing is built, trained or written."""
    abl = spec.ablations
    chosen = get_rows(abl, rows)
    folder = os.path.abspath(demo_cache or default_cache_dir())
    problem = verify_demo(folder)
    (first, first_recipe), (stage, recipe) = abl.small
    lines = [f"{spec.title} reproduce ablations --small dry run: nothing was built, trained or written",
             f"demo set: {folder}" + (" (present)" if problem is None else f" (will be built first: {problem})")]
    if any(r.first_stage for r in chosen):
        lines.append(f"{first}: {stage1_steps} steps of {first_recipe} -> {os.path.join(output_dir, first)} "
                     "(shared by the rows that start from it)")
    for r in chosen:
        lines.append(f"row '{r.name}' ({r.label}): {steps} {stage} steps of {recipe} {' '.join(r.overrides)} -> "
                     f"{os.path.join(output_dir, r.name)}; beside the paper's {paper_cell(r)}")
    lines.append(f"evaluation: {', '.join(demo_benchmarks())} under protocol `{abl.protocol}` in "
                 f"{_precision(abl)}, and the identity baseline")
    lines.append(f"tables: {os.path.join(output_dir, 'ablations.md')}, {os.path.join(output_dir, 'ablations.json')}")
    return lines


def run_small_ablations(output_dir: str = "runs/ablations-small", rows: Optional[Sequence[str]] = None,
                        stage1_steps: int = 20, steps: int = 40, device: str = "auto",
                        demo_cache: Optional[str] = None, spec: Optional[DemoSpec] = None,
                        benchmarks: Optional[Sequence[str]] = None, extra: Sequence[str] = (),
                        progress: bool = False, method: Optional[str] = None,
                        log: Callable[[str], None] = print) -> AblationOutcome:
    """Every row on the demo set: one first-stage run, then ``steps`` steps per row; evaluation on the demo test
    split (``benchmarks``: a subset of its ``demo-<task>`` sets). ``extra``: config overrides of every row."""
    mspec = ablation_spec(method)
    abl = mspec.ablations
    dev = resolve_device(device)
    demo_dir = ensure_demo(demo_cache, spec, log=log)
    benchmarks = list(benchmarks or demo_benchmarks())
    chosen = get_rows(abl, rows)
    (first, first_recipe), (stage, recipe) = abl.small
    start: List[str] = []
    if any(r.first_stage for r in chosen):
        log(f"{first} (shared by the rows that start from it): {stage1_steps} steps on {dev}")
        s1 = run_training(first, small_config(first_recipe, demo_dir, os.path.join(output_dir, first), stage1_steps,
                                              dev), progress=progress, print_config=False)
        start = abl.carry(s1.checkpoint)
    results = []
    for row in chosen:
        log(f"row '{row.name}' ({row.label}): {steps} {stage} steps, {' '.join(row.overrides)}")
        cfg = small_config(recipe, demo_dir, os.path.join(output_dir, row.name), steps, dev,
                           list(row.overrides) + (start if row.first_stage else []) + list(extra))
        results.append(_train_and_evaluate(mspec, row, cfg, recipe, benchmarks, demo_dir, dev, progress, log))
    ident = evaluate(identity_restorer(dev), [(n, demo_dir) for n in benchmarks], abl.protocol, progress=False,
                     log=None)
    table = small_table(results, benchmarks, abl, {n: b["psnr"] for n, b in ident.summary["benchmarks"].items()})
    _write(output_dir, results, table, "small")
    return AblationOutcome(results, table, output_dir)


# ---------------------------------------------------------------------------------------------------------------
# Full size: the shipped recipe per row (GPUs)
# ---------------------------------------------------------------------------------------------------------------
def full_table(results: List[RowResult], abl: AblationSpec, present: Sequence[str], missing: Sequence[str]) -> str:
    lines = [f"| Row | trained recipe | ours: {abl.column} | paper | Δ | steps |", "|---|---|---|---|---|---|"]
    for r in results:
        ours = r.mean(present)
        short = [n for n in present if n in r.sets and short_set(r.sets[n])]
        mark = "; ".join(([f"{len(present)}/{len(abl.benchmarks)} sets"] if missing else [])
                         + ([f"short: {', '.join(short)}"] if short else []))
        why = r.no_delta or ("partial column" if mark else None)
        delta = "–" if ours is None else (f"– ({why})" if why else f"{ours - r.row.published:+.2f}")
        cell = "–" if ours is None else f"{ours:.2f}" + (f" ({mark})" if mark else "")
        lines.append(f"| {r.row.label} | {r.recipe} | {cell} | {paper_cell(r.row)} | {delta} | {r.steps:,} |")
    sets = ", ".join(set_count(n, results[0].sets[n]) for n in present if results and n in results[0].sets)
    lines += ["", f"Ours: {abl.column} under protocol `{abl.protocol}` in {_precision(abl)}, mean over {sets}"
              + (f" (missing: {', '.join(missing)}: not comparable with the published value)" if missing else "")
              + ". A Δ is printed only beside an exact published value of the same recipe, for a complete column.",
              ""] + _references(results, abl)
    return "\n".join(lines)


def plan_full_ablations(train_root: str, stage1_weights: Optional[str], stage1_root: Optional[str],
                        output_dir: str, rows: Optional[Sequence[str]] = None, overrides: Sequence[str] = (),
                        method: Optional[str] = None) -> List[List[str]]:
    """The ``varformer train`` command lines of a full-size run (the first stage if needed, then one per row)."""
    abl = ablation_spec(method).ablations
    cmds = []
    s1 = stage1_weights
    chosen = get_rows(abl, rows)
    first, first_recipe = abl.first_stage
    if s1 is None and any(r.first_stage for r in chosen):
        if stage1_root is None:
            raise ConfigError(f"the rows that start from {first} need its model: pass --stage1-weights, or "
                              f"--stage1-root (its training images) to train it first")
        s1_dir = os.path.join(output_dir, first)
        cmds.append([first, os.path.join(RECIPES_DIR, first_recipe), f"data.root={stage1_root}",
                     f"train.output_dir={s1_dir}", *overrides])
        s1 = os.path.join(s1_dir, "final_ema.pt")
    for row in chosen:
        extra = abl.carry(s1) if row.first_stage else []
        cmds.append([abl.stage, row_recipe(abl, row), f"data.root={train_root}",
                     f"train.output_dir={os.path.join(output_dir, row.name)}", *extra, *overrides])
    return cmds


def run_full_ablations(train_root: str, eval_root: str, output_dir: str = "runs/ablations",
                       stage1_weights: Optional[str] = None, stage1_root: Optional[str] = None,
                       rows: Optional[Sequence[str]] = None, overrides: Sequence[str] = (), device: str = "auto",
                       progress: bool = True, method: Optional[str] = None,
                       log: Callable[[str], None] = print) -> AblationOutcome:
    spec = ablation_spec(method)
    abl = spec.ablations
    present, missing = locate_benchmarks(eval_root, abl.benchmarks)
    cmds = plan_full_ablations(train_root, stage1_weights, stage1_root, output_dir, rows, overrides, method)
    dev = resolve_device(device)
    results = []
    rows_by_dir = {os.path.join(output_dir, r.name): r for r in get_rows(abl, rows)}
    for stage, recipe, *args in cmds:
        cfg = load_config(recipe, args)
        if stage != abl.stage:
            log(f"{stage} from {recipe}")
            run_training(stage, cfg, progress=progress)
            continue
        row = rows_by_dir[cfg.train.output_dir]
        log(f"row '{row.name}' ({row.label}) from {recipe}")
        results.append(_train_and_evaluate(spec, row, cfg, recipe, present, eval_root, dev, progress, log))
    table = full_table(results, abl, present, missing)
    _write(output_dir, results, table, "full")
    return AblationOutcome(results, table, output_dir)
