"""``varformer reproduce paper --root DATA``: the released weights to the paper's main table in one command.

    outcome = reproduce_paper("/data/test", protocols=("paper", "full"))
    print(outcome.table)        # also written to <output_dir>/main_table.md

Steps: find the benchmarks the table's four columns need under ``root`` (Deraining = Rain100H, Rain100L, Test100,
Test1200, Test2800; Deblurring = GoPro; Low-light = LOL; Dehazing = SOTS outdoor; ``published.yaml`` table
``varformer_paper_4task``), fetch the three released files, convert the official checkpoint once
(``varformer.reproduce.weights``), evaluate under each protocol with the evaluator of ``varformer evaluate``, and
render the table with the published rows and our deltas (``varformer.evaluation.report.paper_table``). Sets that
are not under ``root`` are reported missing, and the columns say which sets they averaged; with none of them
there, it stops before downloading anything.
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from varformer.data.catalog import find_all, get_benchmark
from varformer.errors import DataError
from varformer.evaluation import EvalResult, check_output_dir, evaluate, get_protocol
from varformer.evaluation.report import load_published, paper_table
from varformer.inference import load_restorer
from varformer.reproduce.weights import (OFFICIAL_FILENAME, Converted, converted_checkpoint,
                                         describe_backbone_check, fetch_paper_weights)

PAPER_TABLE = "varformer_paper_4task"
RESTORER_NAME = f"VarFormer ({OFFICIAL_FILENAME}, converted)"


def paper_benchmarks(table: str = PAPER_TABLE) -> List[str]:
    """The benchmarks the table's columns average, in column order."""
    return [n for c in load_published()[table]["columns"] for n in c["benchmarks"]]


def locate_benchmarks(root: str, names: Sequence[str]) -> Tuple[List[str], List[str]]:
    """(present, missing) among ``names`` under ``root``; a set found twice, or none found, is an error."""
    if not os.path.isdir(root):
        raise DataError(f"benchmark root not found: {root}")
    found: Dict[str, List[str]] = {}
    for loc in find_all(root, list(names)):
        found.setdefault(loc.benchmark.name, []).append(loc.folder)
    twice = {n: f for n, f in found.items() if len(f) > 1}
    if twice:
        n, folders = next(iter(twice.items()))
        raise DataError(f"{n}: several copies under {root} ({', '.join(folders)}); keep one, or point --root at "
                        "a folder that holds one")
    present = [n for n in names if n in found]
    missing = [n for n in names if n not in found]
    if not present:
        layouts = "; ".join(f"{n}: {get_benchmark(n).layout}" for n in names)
        raise DataError(f"none of the benchmarks needed ({', '.join(names)}) is under {root}. Expected layouts: {layouts}. "
                        f"`varformer data check {root}` shows what is recognised there")
    return present, missing


@dataclass
class PaperOutcome:
    converted: Converted
    present: List[str]
    missing: List[str]
    results: Dict[str, EvalResult]          # protocol -> result
    table: str
    output_dir: str


def render_main_table(results: Dict[str, EvalResult], root: str, present: Sequence[str],
                      missing: Sequence[str], converted: Converted) -> str:
    lines = ["# VarFormer: the paper's main table from the released weights", "",
             f"Weights: {converted.record['source']} (sha256 {converted.sha256[:12]}), converted to "
             f"{converted.path}; settings {converted.record['settings']}.",
             f"Backbone check: {describe_backbone_check(converted.record['backbone'])}.",
             f"Benchmarks under {root}: {', '.join(present)}"
             + (f"; missing: {', '.join(missing)}." if missing else " (all the table needs)."), ""]
    for proto, res in results.items():
        lines += [f"## Protocol `{proto}`", "", f"Caption: {res.summary['caption']}.", ""]
        lines += paper_table(res.summary, PAPER_TABLE) + [""]
    return "\n".join(lines)


def reproduce_paper(root: str, protocols: Sequence[str] = ("paper",), output_dir: str = "outputs/reproduce",
                    offline: bool = False, checkpoints_dir: Optional[str] = None, cache_dir: Optional[str] = None,
                    device: str = "auto", precision: str = "fp32", batch_size: int = 4, workers: int = 0,
                    overwrite: bool = False, progress: bool = True,
                    log: Optional[Callable[[str], None]] = print) -> PaperOutcome:
    protos = {p: get_protocol(p) for p in protocols}
    present, missing = locate_benchmarks(root, paper_benchmarks())      # data problems stop before any download
    outs = {p: os.path.join(output_dir, p) for p in protos}
    for out in outs.values():
        check_output_dir(out, overwrite)
    if log and missing:
        log(f"missing under {root}: {', '.join(missing)} (their columns average the sets found; "
            "`varformer data list` shows the layouts)")
    files = fetch_paper_weights(offline=offline, checkpoints_dir=checkpoints_dir, log=log)
    conv = converted_checkpoint(files, None if cache_dir is None else cache_dir, log=log)
    restorer = dataclasses.replace(load_restorer(str(conv.path), device, precision), name=RESTORER_NAME)
    results = {}
    for p, proto in protos.items():
        results[p] = evaluate(restorer, [(n, root) for n in present], proto, output_dir=outs[p],
                              batch_size=batch_size, overwrite=overwrite, workers=workers, progress=progress,
                              log=log)
    table = render_main_table(results, root, present, missing, conv)
    os.makedirs(output_dir, exist_ok=True)
    with open(os.path.join(output_dir, "main_table.md"), "w") as fh:
        fh.write(table + "\n")
    with open(os.path.join(output_dir, "weights.json"), "w") as fh:
        json.dump({"files": {k: str(v) for k, v in files.items()}, "converted": str(conv.path),
                   "converted_now": conv.converted_now, **conv.record}, fh, indent=1)
    return PaperOutcome(conv, present, missing, results, table, output_dir)
