"""``varformer demo``: build the offline demo benchmark, evaluate restorers on it under both protocols, print a table.

``run_demo`` evaluates a list of named restorers: the identity baseline always, plus whatever each step in
``train_steps`` returns (a step receives the demo folder and returns a ``Restorer``, or None when it has nothing
to evaluate and has said why). The training step is ``varformer.demo.training.DemoTraining``: a method's demo
recipe (``MethodSpec.demo``, any registered method) for the recipe's fixed, seeded numbers of steps;
``pretrained_restorers`` evaluates the model files of any method found under ``checkpoints/`` instead. A layer on
top of training, evaluation and inference: nothing in them knows about the demo, and nothing here names a method.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from varformer.data.catalog import demo_benchmarks
from varformer.data.demo_set import DEMO_TASKS, DemoSpec, ensure_demo
from varformer.errors import VarformerError
from varformer.evaluation import EvalResult, check_output_dir, evaluate
from varformer.evaluation.report import TASK_COLUMNS
from varformer.files import claim_folder, folder_entries, mark_folder
from varformer.inference import Restorer, identity_restorer, load_restorer
from varformer.methods import registry

DEMO_PROTOCOLS = ("paper", "full")
TrainStep = Callable[[str], Optional[Restorer]]
WEIGHT_EXTENSIONS = (".pt", ".pth", ".safetensors", ".ckpt")


@dataclass
class DemoOutcome:
    demo_dir: str
    build_seconds: float
    results: Dict[Tuple[str, str], EvalResult]   # (restorer name, protocol) -> result
    table: str
    trained: bool
    restorers: Optional[List[Restorer]] = None   # identity first, then what the steps returned
    output_dirs: Optional[Dict[Tuple[str, str], str]] = None   # where each evaluation wrote (with output_dir)


def demo_benches(demo_dir: str, tasks: Sequence[str] = DEMO_TASKS) -> List[Tuple[str, str]]:
    """(benchmark name, root) of the demo set's test split, one per task."""
    return [(name, demo_dir) for name in demo_benchmarks() if name[len("demo-"):] in tasks]


def evaluation_dirs(restorers: Sequence[Restorer], output_dir: Optional[str],
                    protocols: Sequence[str]) -> Dict[Tuple[str, str], Optional[str]]:
    return {(r.name, p): (None if output_dir is None else os.path.join(output_dir, r.name, p))
            for r in restorers for p in protocols}


def evaluate_restorers(restorers: Sequence[Restorer], demo_dir: str, protocols: Sequence[str] = DEMO_PROTOCOLS,
                       output_dir: Optional[str] = None, overwrite: bool = False, batch_size: int = 4,
                       progress: bool = True, log: Optional[Callable[[str], None]] = print,
                       tasks: Sequence[str] = DEMO_TASKS) -> Dict[Tuple[str, str], EvalResult]:
    out_dirs = evaluation_dirs(restorers, output_dir, protocols)
    for d in out_dirs.values():  # refuse before any work
        if d is not None:
            check_output_dir(d, overwrite)
    results = {}
    for r in restorers:
        for p in protocols:
            results[(r.name, p)] = evaluate(r, demo_benches(demo_dir, tasks), p, output_dir=out_dirs[(r.name, p)],
                                            batch_size=batch_size, overwrite=overwrite, progress=progress, log=None)
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
        restorer = step(demo_dir)
        if restorer is not None:
            restorers.append(restorer)
    results = evaluate_restorers(restorers, demo_dir, protocols, output_dir, overwrite, batch_size, progress, log,
                                 tasks)
    dirs = {k: d for k, d in evaluation_dirs(restorers, output_dir, protocols).items() if d is not None}
    return DemoOutcome(demo_dir, build_seconds, results, combined_table(results), trained=bool(train_steps),
                       restorers=restorers, output_dirs=dirs or None)


# ---------------------------------------------------------------------------------------------------------------
# Weights already there: the model files of any method under checkpoints/
# ---------------------------------------------------------------------------------------------------------------
def find_trained_weights(folder: str = "checkpoints", method: Optional[str] = None,
                         log: Optional[Callable[[str], None]] = None) -> List[str]:
    """The weights files under ``folder`` (top level) that a method reads as a model: our model files of any
    registered method (or of ``method`` only) and the releases a method recognises. Backbone files (VQVAE, VAR,
    VGG19), training checkpoints and files no method reads are passed over (said in ``log``)."""
    if not os.path.isdir(folder):
        return []
    found: List[str] = []
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if not (os.path.isfile(path) and name.lower().endswith(WEIGHT_EXTENSIONS)):
            continue
        try:
            info = registry.inspect_weights(path)
        except VarformerError as e:  # unreadable: say so, and look at the others
            if log:
                log(f"passed over {path}: {e}")
            continue
        if info.kind not in ("model", "official") or info.method is None:
            continue
        if method is None or info.method.name == method:
            found.append(path)
    return found


def pretrained_restorers(paths: Sequence[str], device: str = "auto",
                         log: Callable[[str], None] = print) -> List[TrainStep]:
    """Steps that evaluate existing weights instead of training; a file its method cannot run as a restorer (a
    stage that does not restore, a release to convert first) is passed over with its one-line reason."""

    def step(demo_dir: str, path: str) -> Optional[Restorer]:
        try:
            return load_restorer(path, device, "fp32")  # fp32 like every demo row
        except VarformerError as e:
            log(f"passed over {path}: {e}")
            return None

    return [lambda demo_dir, p=p: step(demo_dir, p) for p in paths]
