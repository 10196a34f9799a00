"""``varformer reproduce ablations``: the paper's ablation table (deraining PSNR), one trained model per row.

Rows (docs/ablations.md says what each means and why): baseline without the VAR prior, + the VAR prior with fixed
scale weights, + DAE, + AFT, + adaptive mix-up skip (= VarFormer). Each row is the stage-2 recipe with the row's
model switches (``model.prior``, ``model.aft``, ``model.mixup_skip``), trained by the same trainer
(``varformer.training.run.run_training``) and evaluated by the same evaluator.

- Full size (GPUs): ``configs/ablations/<row>.yaml`` (the official stage-2 recipe otherwise), every row started
  from one stage-1 model (``stage1_weights``, or trained first from ``configs/stage1.yaml``); deraining PSNR under
  the paper protocol, mean over the Rain13K test sets found under the evaluation root.
- Small (``small=True``): the demo recipes ``configs/demo_stage{1,2}.yaml`` with the row's switches on the demo set,
  a fixed number of steps per row (equal for every row), one shared stage-1 run; the table shows the demo test
  split's PSNR per task. It shows that every row trains and restores; its numbers are not the paper's.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

import torch

from varformer.config import RECIPES_DIR, load_config
from varformer.data.catalog import demo_benchmarks
from varformer.data.demo_set import DemoSpec, ensure_demo
from varformer.errors import ConfigError
from varformer.evaluation import evaluate
from varformer.evaluation.report import TASK_COLUMNS
from varformer.inference import identity_restorer, model_restorer
from varformer.model import load_varformer
from varformer.reproduce.paper import locate_benchmarks
from varformer.runtime import resolve_device
from varformer.training.run import run_training

DERAIN_SETS = ("rain100h", "rain100l", "test100", "test1200", "test2800")
PAPER_SOURCE = ("paper's ablation table as given in a third-party summary (approximate '~' values, not checked "
                "against the PDF; only the last row, the main table's 31.33, is exact)")


@dataclass(frozen=True)
class AblationRow:
    name: str                        # configs/ablations/<name>.yaml
    label: str
    paper_psnr: float                # deraining PSNR in the paper's table
    exact: bool                      # False: the summary gives "~value"
    switches: Dict[str, object] = field(default_factory=dict)   # model.* keys of the row

    def overrides(self) -> List[str]:
        return [f"model.{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in self.switches.items()]


ROWS = (
    AblationRow("baseline", "baseline, no VAR prior", 29.5, False,
                dict(prior="none", aft=False, mixup_skip=False, n_cross=0, dec_adjust=False)),
    AblationRow("fixed", "+ VAR prior, fixed scale weights", 30.2, False,
                dict(prior="fixed", aft=False, mixup_skip=False)),
    AblationRow("dae", "+ DAE", 30.8, False, dict(prior="dae", aft=False, mixup_skip=False)),
    AblationRow("aft", "+ AFT", 31.1, False, dict(prior="dae", aft=True, mixup_skip=False)),
    AblationRow("full", "+ adaptive mix-up skip (VarFormer)", 31.33, True, dict(prior="dae", aft=True,
                                                                                mixup_skip=True)),
)


def get_rows(names: Optional[Sequence[str]] = None) -> List[AblationRow]:
    if not names:
        return list(ROWS)
    known = {r.name: r for r in ROWS}
    bad = [n for n in names if n not in known]
    if bad:
        raise ConfigError(f"unknown ablation rows {bad} (rows: {', '.join(known)})")
    return [known[n] for n in names]


def row_recipe(row: AblationRow) -> str:
    return os.path.join(RECIPES_DIR, "ablations", f"{row.name}.yaml")


@dataclass
class RowResult:
    row: AblationRow
    steps: int
    seconds_per_step: float
    params_m: float                  # trainable parameters, millions
    psnr: Dict[str, float]           # benchmark -> mean PSNR
    export: str

    def mean(self, names: Sequence[str]) -> Optional[float]:
        vals = [self.psnr[n] for n in names if self.psnr.get(n) is not None]
        return sum(vals) / len(vals) if vals else None


@dataclass
class AblationOutcome:
    results: List[RowResult]
    table: str
    output_dir: str


# ---------------------------------------------------------------------------------------------------------------
def _train_and_evaluate(row: AblationRow, cfg, benchmarks: Sequence[str], eval_root: Optional[str],
                        device: torch.device, progress: bool, log: Callable[[str], None]) -> RowResult:
    t0 = time.perf_counter()
    fit = run_training("stage2", cfg, progress=progress, print_config=False)
    seconds = time.perf_counter() - t0
    if fit.status != "finished" or fit.export is None:
        raise ConfigError(f"ablation row '{row.name}': training stopped ({fit.status}) at step {fit.step}")
    model = load_varformer(fit.export, expect_stage=2)
    trainable = sum(p.numel() for n, p in model.named_parameters() if not n.startswith(("vae.", "var.blocks.")))
    restorer = model_restorer(model, device, "fp32", name=f"ablation-{row.name}")
    res = evaluate(restorer, [(n, eval_root) for n in benchmarks], "paper", progress=progress, log=None)
    psnr = {n: b["psnr"] for n, b in res.summary["benchmarks"].items()}
    log(f"row '{row.name}': {fit.step} steps in {seconds:.0f} s; PSNR "
        + ", ".join(f"{n} {v:.2f}" for n, v in psnr.items() if v is not None))
    return RowResult(row, fit.step, seconds / max(fit.step, 1), trainable / 1e6, psnr, fit.export)


def _write(output_dir: str, results: List[RowResult], table: str, mode: str) -> None:
    os.makedirs(output_dir, exist_ok=True)
    with open(os.path.join(output_dir, "ablations.md"), "w") as fh:
        fh.write(table + "\n")
    with open(os.path.join(output_dir, "ablations.json"), "w") as fh:
        json.dump({"mode": mode, "rows": [
            {"row": r.row.name, "label": r.row.label, "switches": r.row.switches, "paper_psnr": r.row.paper_psnr,
             "steps": r.steps, "seconds_per_step": r.seconds_per_step, "trainable_params_m": r.params_m,
             "psnr": r.psnr, "export": r.export} for r in results]}, fh, indent=1)


def _paper_cell(row: AblationRow) -> str:
    return f"{row.paper_psnr:.2f}" if row.exact else f"~{row.paper_psnr:.1f}"


# ---------------------------------------------------------------------------------------------------------------
# Small mode: the demo set, CPU minutes
# ---------------------------------------------------------------------------------------------------------------
def small_config(stage: int, demo_dir: str, out_dir: str, steps: int, device: torch.device,
                 extra: Sequence[str] = ()):
    """``configs/demo_stage{stage}.yaml`` for ``steps`` steps into ``out_dir`` (no validation, no image logs:
    every row is measured by the evaluator afterwards); on CUDA batch 4 in bf16, as ``varformer demo``."""
    root = os.path.join(demo_dir, "train", "clean") if stage == 1 else os.path.join(demo_dir, "train")
    run = [f"data.root={root}", f"eval.root={demo_dir}", f"train.output_dir={out_dir}", "train.resume=none",
           f"train.total_iters={steps}", "train.max_seconds=0", f"train.device={device}", "train.val_every=0",
           "train.val_at_start=false", "train.image_every=0", f"train.save_every={steps}",
           f"train.log_every={max(1, steps // 4)}"]
    if device.type == "cuda":
        run += ["data.batch_size=4", "train.precision=bf16"]
    return load_config(f"demo_stage{stage}.yaml", run + list(extra))


def small_table(results: List[RowResult], benchmarks: Sequence[str],
                identity: Optional[Dict[str, float]] = None) -> str:
    tasks = [b.split("-", 1)[1] for b in benchmarks]
    labels = dict(TASK_COLUMNS)
    header = (["Row", "model switches", "paper (derain PSNR)"] + [labels.get(t, t) for t in tasks]
              + ["mean", "trainable M", "steps", "s/step"])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in results:
        sw = ", ".join(f"{k}={v}" for k, v in r.row.switches.items() if k in ("prior", "aft", "mixup_skip"))
        cells = [f"{r.psnr[b]:.2f}" if r.psnr.get(b) is not None else "–" for b in benchmarks]
        mean = r.mean(benchmarks)
        lines.append("| " + " | ".join([r.row.label, sw, _paper_cell(r.row)] + cells
                                       + ["–" if mean is None else f"{mean:.2f}", f"{r.params_m:.2f}",
                                          str(r.steps), f"{r.seconds_per_step:.1f}"]) + " |")
    if identity is not None:
        vals = [identity.get(b) for b in benchmarks]
        mean = sum(v for v in vals if v is not None) / max(1, sum(v is not None for v in vals))
        lines.append("| input (identity) | – | – | " + " | ".join("–" if v is None else f"{v:.2f}" for v in vals)
                     + f" | {mean:.2f} | – | – | – |")
    lines += ["", "Small mode: PSNR (dB, paper protocol: 256x256) on the demo test split per task, after the same "
              "number of stage-2 steps for every row from one shared stage-1 run (the demo recipe's identity "
              "start keeps every row near its input, the last line); small models (VQVAE/U-Net width 32, VAR "
              "depth 2) on a RANDOM-INIT VAR backbone. It shows every row training and restoring; it does "
              "not reproduce the paper's values, which come from full-size models trained for 700k steps on the "
              "real data. s/step: the run's wall time (model build and export included) per step. "
              f"Paper column: {PAPER_SOURCE}."]
    return "\n".join(lines)


def run_small_ablations(output_dir: str = "runs/ablations-small", rows: Optional[Sequence[str]] = None,
                        stage1_steps: int = 20, steps: int = 40, device: str = "auto",
                        demo_cache: Optional[str] = None, spec: Optional[DemoSpec] = None,
                        benchmarks: Optional[Sequence[str]] = None, extra: Sequence[str] = (),
                        progress: bool = False, log: Callable[[str], None] = print) -> AblationOutcome:
    """Every row on the demo set: one stage-1 run, then ``steps`` stage-2 steps per row; evaluation on the demo
    test split (``benchmarks``: a subset of its ``demo-<task>`` sets). ``extra``: config overrides of every
    stage-2 run."""
    dev = resolve_device(device)
    demo_dir = ensure_demo(demo_cache, spec, log=log)
    benchmarks = list(benchmarks or demo_benchmarks())
    chosen = get_rows(rows)
    stage1 = None
    if any(r.switches["prior"] != "none" for r in chosen):
        log(f"stage 1 (shared by the rows with a VAR prior): {stage1_steps} steps on {dev}")
        s1 = run_training("stage1", small_config(1, demo_dir, os.path.join(output_dir, "stage1"), stage1_steps, dev),
                          progress=progress, print_config=False)
        stage1 = s1.checkpoint
    results = []
    for row in chosen:
        start = [f"model.stage1_weights={stage1}"] if row.switches["prior"] != "none" else []
        log(f"row '{row.name}' ({row.label}): {steps} stage-2 steps, {' '.join(row.overrides())}")
        cfg = small_config(2, demo_dir, os.path.join(output_dir, row.name), steps, dev,
                           row.overrides() + start + list(extra))
        results.append(_train_and_evaluate(row, cfg, benchmarks, demo_dir, dev, progress, log))
    ident = evaluate(identity_restorer(dev), [(n, demo_dir) for n in benchmarks], "paper", progress=False, log=None)
    table = small_table(results, benchmarks, {n: b["psnr"] for n, b in ident.summary["benchmarks"].items()})
    _write(output_dir, results, table, "small")
    return AblationOutcome(results, table, output_dir)


# ---------------------------------------------------------------------------------------------------------------
# Full size: the official recipe per row (GPUs)
# ---------------------------------------------------------------------------------------------------------------
def full_table(results: List[RowResult], derain: Sequence[str], missing: Sequence[str]) -> str:
    lines = ["| Row | model switches | paper | ours | Δ | steps |", "|---|---|---|---|---|---|"]
    for r in results:
        sw = ", ".join(f"{k}={v}" for k, v in r.row.switches.items() if k in ("prior", "aft", "mixup_skip"))
        ours = r.mean(derain)
        delta = "–" if ours is None else f"{ours - r.row.paper_psnr:+.2f}"
        lines.append(f"| {r.row.label} | {sw} | {_paper_cell(r.row)} | "
                     f"{'–' if ours is None else f'{ours:.2f}'} | {delta} | {r.steps} |")
    lines += ["", f"Deraining PSNR (dB, paper protocol), ours = mean over {', '.join(derain)}"
              + (f" (missing: {', '.join(missing)}; not comparable with the five-set mean)" if missing else "")
              + f". Paper: {PAPER_SOURCE}."]
    return "\n".join(lines)


def plan_full_ablations(train_root: str, stage1_weights: Optional[str], stage1_root: Optional[str],
                        output_dir: str, rows: Optional[Sequence[str]] = None,
                        overrides: Sequence[str] = ()) -> List[List[str]]:
    """The ``varformer train`` command lines of a full-size run (stage 1 if needed, then one per row)."""
    cmds = []
    s1 = stage1_weights
    chosen = get_rows(rows)
    if s1 is None and any(r.switches["prior"] != "none" for r in chosen):
        if stage1_root is None:
            raise ConfigError("the rows with a VAR prior start from a stage-1 model: pass --stage1-weights, or "
                              "--stage1-root (clean images, e.g. DF2K HR) to train it first")
        s1_dir = os.path.join(output_dir, "stage1")
        cmds.append(["stage1", os.path.join(RECIPES_DIR, "stage1.yaml"), f"data.root={stage1_root}",
                     f"train.output_dir={s1_dir}", *overrides])
        s1 = os.path.join(s1_dir, "final_ema.pt")
    for row in chosen:
        extra = [f"model.stage1_weights={s1}"] if row.switches["prior"] != "none" else []
        cmds.append(["stage2", row_recipe(row), f"data.root={train_root}",
                     f"train.output_dir={os.path.join(output_dir, row.name)}", *extra, *overrides])
    return cmds


def run_full_ablations(train_root: str, eval_root: str, output_dir: str = "runs/ablations",
                       stage1_weights: Optional[str] = None, stage1_root: Optional[str] = None,
                       rows: Optional[Sequence[str]] = None, overrides: Sequence[str] = (), device: str = "auto",
                       progress: bool = True, log: Callable[[str], None] = print) -> AblationOutcome:
    present, missing = locate_benchmarks(eval_root, DERAIN_SETS)
    cmds = plan_full_ablations(train_root, stage1_weights, stage1_root, output_dir, rows, overrides)
    dev = resolve_device(device)
    results = []
    rows_by_dir = {os.path.join(output_dir, r.name): r for r in get_rows(rows)}
    for stage, recipe, *args in cmds:
        cfg = load_config(recipe, args)
        if stage == "stage1":
            log(f"stage 1 from {recipe}")
            run_training("stage1", cfg, progress=progress)
            continue
        row = rows_by_dir[cfg.train.output_dir]
        log(f"row '{row.name}' ({row.label}) from {recipe}")
        results.append(_train_and_evaluate(row, cfg, present, eval_root, dev, progress, log))
    table = full_table(results, present, missing)
    _write(output_dir, results, table, "full")
    return AblationOutcome(results, table, output_dir)
