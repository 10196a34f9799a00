"""``varformer reproduce paper --root DATA [--method NAME]``: a method's released weights to its paper's main table
in one command, through the method's ``MethodSpec.paper`` (the files, their conversion, the backbone check, the
protocols, the published table).

    outcome = reproduce_paper("/data/test", protocols=("paper", "full"))
    print(outcome.table)        # also written to <output_dir>/main_table.md

Steps: find the benchmarks the table's columns need under ``root`` (``published.yaml``) and count their images
against the expected ones, fetch the released files, convert the source file once (``varformer.reproduce.weights``),
evaluate under each protocol with the evaluator of ``varformer evaluate`` in the protocol's precision (fp32 for the
papers here) unless another is asked for, and render the table (``varformer.evaluation.report.paper_table``): the
published rows each with their protocol, a Δ only against rows measured as ours and only for complete columns.
Sets not under ``root`` are reported missing, short sets are marked, ``max_images`` gives a clearly labelled
partial table; with none of the sets there it stops before downloading anything. ``plan_paper`` is the dry run.
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from varformer.data.benchmark_data import benchmark_dataset
from varformer.data.catalog import find_all, get_benchmark
from varformer.errors import ConfigError, DataError, WeightsNotFoundError
from varformer.evaluation import EvalResult, check_output_dir, evaluate, get_protocol
from varformer.evaluation.evaluate import run_precision
from varformer.evaluation.report import load_published, paper_table, set_count
from varformer.files import write_text_atomic
from varformer.inference import load_restorer
from varformer.methods import registry
from varformer.methods.api import MethodSpec
from varformer.reproduce.weights import (Converted, conversion_folder, converted_checkpoint, fetch_released,
                                         locate_released, missing_message, remembered_sha256)


def paper_spec(method: Optional[str] = None) -> MethodSpec:
    """The method (default: the registry's default) with its paper reproduction; one line if it has none."""
    spec = registry.get(method or registry.DEFAULT)
    if spec.paper is None:
        have = ", ".join(n for n, s in registry.methods().items() if s.paper is not None) or "none"
        raise ConfigError(f"{spec.title} has no paper reproduction here yet (methods with one: {have}); evaluate "
                          f"its weights with `varformer evaluate --protocol {spec.default_protocol}`")
    return spec


def paper_benchmarks(spec: MethodSpec) -> List[str]:
    """The benchmarks the published table's columns average, in column order."""
    return [n for c in load_published()[spec.paper.table]["columns"] for n in c["benchmarks"]]


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
        raise DataError(f"none of the benchmarks needed ({', '.join(names)}) is under {root}. Expected layouts: "
                        f"{layouts}. `varformer data check {root}` shows what is recognised there")
    return present, missing


def image_counts(root: str, present: Sequence[str]) -> Dict[str, dict]:
    """Per present set: the pairs found (files listed and paired, no image read) and the expected count."""
    return {n: {"images": len(benchmark_dataset(n, root)), "expected": get_benchmark(n).expected} for n in present}


def describe_sets(counts: Dict[str, dict], missing: Sequence[str], max_images: Optional[int]) -> str:
    sets = ", ".join(set_count(n, c) for n, c in counts.items())
    short = [n for n, c in counts.items() if c["expected"] is not None and c["images"] < c["expected"]]
    if missing or short:
        verdict = "INCOMPLETE: " + "; ".join(([f"missing {', '.join(missing)}"] if missing else [])
                                              + ([f"short {', '.join(short)}"] if short else []))
    else:
        verdict = "every set the table needs, complete"
    limit = f"; at most {max_images} images per set evaluated (--max-images)" if max_images else ""
    return f"{sets} ({verdict}{limit})"


def protocol_precisions(protocols: Sequence[str], precision: Optional[str]) -> Dict[str, str]:
    """The precision of each protocol's run: the one asked for, else the protocol's recorded one, else fp32 (the
    released weights' official evaluation)."""
    out = {}
    for p in protocols:
        chosen = run_precision(precision, "auto", get_protocol(p))
        out[p] = "fp32" if chosen == "auto" else chosen
    return out


@dataclass
class PaperOutcome:
    converted: Converted
    present: List[str]
    missing: List[str]
    results: Dict[str, EvalResult]          # protocol -> result
    table: str
    output_dir: str


def render_main_table(spec: MethodSpec, results: Dict[str, EvalResult], root: str, counts: Dict[str, dict],
                      missing: Sequence[str], converted: Converted, max_images: Optional[int] = None) -> str:
    lines = [f"# {spec.title}: the paper's main table from the released weights", ""]
    if any(b.get("limited_to") for r in results.values() for b in r.summary["benchmarks"].values()):
        lines += [f"**PARTIAL TABLE: at most {max_images} images per set (--max-images {max_images}).** A quick "
                  "look: no column is the published measurement, and no Δ is printed.", ""]
    lines += [f"Weights: {converted.record['source']} (sha256 {converted.sha256[:12]}), converted to "
              f"{converted.path}; settings {converted.record['settings']}.",
              f"Backbone check: {spec.paper.describe_check(converted.record['backbone'])}.",
              f"Benchmarks under {root}: {describe_sets(counts, missing, max_images)}.", ""]
    for proto, res in results.items():
        lines += [f"## Protocol `{proto}`, {res.summary['precision']}", "",
                  f"Caption: {res.summary['caption']}.", ""]
        lines += paper_table(res.summary, spec.paper.table) + [""]
    return "\n".join(lines)


def _start(root: str, method: Optional[str], protocols: Optional[Sequence[str]], output_dir: str, overwrite: bool):
    """The checks of a real start, before any download: method, protocols, benchmarks, output folders."""
    spec = paper_spec(method)
    protocols = list(protocols or spec.paper.protocols[:1])
    for p in protocols:
        get_protocol(p)
    present, missing = locate_benchmarks(root, paper_benchmarks(spec))      # data problems stop first
    outs = {p: os.path.join(output_dir, p) for p in protocols}
    for out in outs.values():
        check_output_dir(out, overwrite)
    return spec, protocols, present, missing, outs


def plan_paper(root: str, method: Optional[str] = None, protocols: Optional[Sequence[str]] = None,
               output_dir: str = "outputs/reproduce", offline: bool = False, checkpoints_dir: Optional[str] = None,
               cache_dir: Optional[str] = None, precision: Optional[str] = None, overwrite: bool = False,
               max_images: Optional[int] = None) -> List[str]:
    """``--dry-run``: the checks of a real start and what it would do, as lines; nothing is downloaded, hashed,
    converted, evaluated or written. Raises the one-line error a real start would raise."""
    spec, protocols, present, missing, outs = _start(root, method, protocols, output_dir, overwrite)
    counts = image_counts(root, present)
    found = locate_released(spec.paper, checkpoints_dir)
    absent = [f for f in spec.paper.files if found[f.filename] is None]
    if absent and offline:
        raise WeightsNotFoundError(missing_message(spec.paper, absent, offline, checkpoints_dir))
    lines = [f"{spec.title} reproduce paper dry run: every check passed; nothing was downloaded, converted, "
             "evaluated or written",
             f"benchmarks under {root}: {describe_sets(counts, missing, max_images)}"]
    for f in spec.paper.files:
        where = found[f.filename]
        lines.append(f"{f.filename} ({f.what}): " + (str(where) if where else
                                                     f"not here; will be downloaded from Hugging Face {f.repo_id}"))
    folder = conversion_folder(cache_dir)
    source = found[spec.paper.source]
    digest = remembered_sha256(source, folder / "hashes.json") if source else None
    cached = digest is not None and (folder / f"{digest}.safetensors").is_file()
    lines.append(f"conversion: cached, {folder / f'{digest}.safetensors'}" if cached else
                 f"conversion: {spec.paper.source} will be hashed and converted once into "
                 f"{folder}/<sha256>.safetensors (reused if that file is already there)")
    per_set = [min(c["images"], max_images) if max_images else c["images"] for c in counts.values()]
    for p, prec in protocol_precisions(protocols, precision).items():
        lines.append(f"protocol {p} in {prec}: {sum(per_set):,} images -> {outs[p]}")
    lines.append(f"table: {os.path.join(output_dir, 'main_table.md')} (published table '{spec.paper.table}'), "
                 f"{os.path.join(output_dir, 'weights.json')}")
    return lines


def reproduce_paper(root: str, method: Optional[str] = None, protocols: Optional[Sequence[str]] = None,
                    output_dir: str = "outputs/reproduce", offline: bool = False,
                    checkpoints_dir: Optional[str] = None, cache_dir: Optional[str] = None, device: str = "auto",
                    precision: Optional[str] = None, batch_size: int = 4, workers: int = 0, overwrite: bool = False,
                    max_images: Optional[int] = None, progress: bool = True,
                    log: Optional[Callable[[str], None]] = print) -> PaperOutcome:
    spec, protocols, present, missing, outs = _start(root, method, protocols, output_dir, overwrite)
    if max_images is not None and max_images < 1:
        raise ConfigError(f"--max-images must be >= 1, got {max_images}")
    counts = image_counts(root, present)
    if log:
        log(f"benchmarks under {root}: {describe_sets(counts, missing, max_images)}")
    files = fetch_released(spec.paper, offline=offline, checkpoints_dir=checkpoints_dir, log=log)
    conv = converted_checkpoint(spec, files, None if cache_dir is None else cache_dir, log=log)
    restorers = {}
    results = {}
    for p, prec in protocol_precisions(protocols, precision).items():
        if prec not in restorers:
            restorers[prec] = dataclasses.replace(load_restorer(str(conv.path), device, prec),
                                                  name=f"{spec.title} ({spec.paper.source}, converted)")
        results[p] = evaluate(restorers[prec], [(n, root) for n in present], get_protocol(p), output_dir=outs[p],
                              batch_size=batch_size, overwrite=overwrite, workers=workers, progress=progress,
                              max_images=max_images, log=log)
    table = render_main_table(spec, results, root, counts, missing, conv, max_images)
    os.makedirs(output_dir, exist_ok=True)
    write_text_atomic(os.path.join(output_dir, "main_table.md"), table + "\n")
    write_text_atomic(os.path.join(output_dir, "weights.json"), json.dumps(
        {"files": {k: str(v) for k, v in files.items()}, "converted": str(conv.path),
         "converted_now": conv.converted_now, **conv.record}, indent=1))
    return PaperOutcome(conv, present, missing, results, table, output_dir)
