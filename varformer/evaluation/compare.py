"""``varformer compare RUN_A RUN_B ...``: evaluation runs side by side on the same images (``compare.html``).

Each run is an output folder of ``varformer evaluate`` (``summary.json``, ``per_image.csv``, ``crops/``). Only the
images common to every run are compared; runs on different protocols, metric settings, image sizes or image sets
are flagged in one line each. The page holds, per benchmark: the mean of each run and the mean per-image difference
against the first run (B − A), how many images got better or worse, the paper's qualitative figure (degraded |
each run's restoration | ground truth, the same crop window, with each run's metrics) for the images every run kept
crops of (the fixed sample of ``varformer.evaluation.crops`` always qualifies), and the per-image differences.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from varformer.errors import ConfigError, DataError
from varformer.evaluation.html_page import (CropRows, esc, fmt_metric, higher_is_better, is_our_page, page,
                                            signed_html, table, write_atomic)
from varformer.evaluation.html_report import load_run

COMPARE_FILE = "compare.html"
FIGURE_IMAGES = 12          # crop rows per benchmark at most
OPEN_TABLE_ROWS = 50        # per-image tables longer than this start folded


@dataclass
class CompareResult:
    path: str
    labels: List[str]
    flags: List[str]
    n_common: int
    mean_deltas: Dict[str, Dict[str, Dict[str, Optional[float]]]] = field(default_factory=dict)  # bench/label/metric
    text: str = ""


def compare_target(output_dir: str, overwrite: bool) -> str:
    """``output_dir/compare.html``; refuses a target that is not a compare page of ours unless ``overwrite``."""
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise DataError(f"output {output_dir} is a file, not a folder")
    path = os.path.join(output_dir, COMPARE_FILE)
    if os.path.isdir(path):
        raise DataError(f"{path} is a folder; choose another output folder")
    if os.path.exists(path) and not overwrite and not is_our_page(path, "compare"):
        raise DataError(f"{path} exists and was not written by 'varformer compare'; choose another folder or pass "
                        "--overwrite")
    return path


def _labels(runs: List[Dict[str, object]], given: Optional[Sequence[str]]) -> List[str]:
    if given:
        if len(given) != len(runs) or len(set(given)) != len(given):
            raise ConfigError(f"--labels needs {len(runs)} distinct names, one per run, got {list(given)}")
        return list(given)
    names = [str(r["summary"]["restorer"]) for r in runs]
    names = [f"{n} ({os.path.basename(os.path.normpath(r['dir']))})" if names.count(n) > 1 else n
             for n, r in zip(names, runs)]
    return [f"{n} #{i + 1}" if names.count(n) > 1 else n for i, n in enumerate(names)]


def _flags(runs: List[Dict[str, object]], labels: List[str], common: List[Tuple[str, str]],
           rows: List[Dict[Tuple[str, str], Dict[str, object]]]) -> List[str]:
    """One line per way the runs are not measured alike."""
    flags = []
    protocols = [str(r["summary"]["protocol"]) for r in runs]
    if len(set(protocols)) > 1:
        flags.append("Protocols differ (" + "; ".join(f"{lab}: {p}" for lab, p in zip(labels, protocols))
                     + "): the runs were measured differently, so their numbers are not comparable image by image.")
    benches = sorted({b for b, _ in common})
    settings = {b: [r["summary"]["benchmarks"].get(b, {}).get("metrics") for r in runs] for b in benches}
    differ = [b for b, s in settings.items() if len(set(map(str, s))) > 1]
    if differ and len(set(protocols)) == 1:
        flags.append("Metric settings differ on " + ", ".join(
            f"{b} ({'; '.join(f'{lab}: {s}' for lab, s in zip(labels, settings[b]))})" for b in differ) + ".")
    sizes = [k for k in common if len({(rs[k]["height"], rs[k]["width"]) for rs in rows}) > 1]
    if sizes:
        flags.append(f"Image sizes differ between runs on {len(sizes)} of the {len(common)} common images "
                     f"(e.g. {sizes[0][0]}/{sizes[0][1]}).")
    extra = [len(rs) - len(common) for rs in rows]
    if any(extra):
        flags.append(f"Image sets differ: compared only the {len(common)} images common to all runs; not compared: "
                     + ", ".join(f"{lab} {n}" for lab, n in zip(labels, extra)) + ".")
    return flags


def _mean(values: Sequence[Optional[float]]) -> Optional[float]:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return sum(finite) / len(finite) if finite else None


def _delta(a: Optional[float], b: Optional[float]) -> Optional[float]:
    if a is None or b is None or not (math.isfinite(a) and math.isfinite(b)):
        return None
    return b - a


def compare_runs(run_dirs: Sequence[str], output_dir: str, labels: Optional[Sequence[str]] = None,
                 overwrite: bool = False, figure_images: int = FIGURE_IMAGES) -> CompareResult:
    """Write ``output_dir/compare.html`` comparing the runs (the first is the reference A); see the module doc."""
    if len(run_dirs) < 2:
        raise ConfigError(f"compare needs at least two evaluation runs, got {len(run_dirs)}")
    target = compare_target(output_dir, overwrite)
    runs = [load_run(d) for d in run_dirs]
    names = _labels(runs, labels)
    rows = [{(str(r["benchmark"]), str(r["name"])): r for r in run["rows"]} for run in runs]
    common = [k for k in rows[0] if all(k in rs for rs in rows[1:])]
    if not common:
        sets = "; ".join(f"{lab}: {', '.join(sorted({b for b, _ in rs})) or 'no images'}"
                         for lab, rs in zip(names, rows))
        raise DataError(f"the runs have no image in common ({sets}): nothing to compare")
    metrics = [m for m in runs[0]["metrics"] if all(m in run["metrics"] for run in runs[1:])]
    flags = _flags(runs, names, common, rows)
    result = CompareResult(target, names, flags, len(common))
    body = _head(runs, names, flags)
    by_bench: Dict[str, List[str]] = {}
    for b, n in common:
        by_bench.setdefault(b, []).append(n)
    summary_rows, text_rows, zoom = [], [], CropRows()
    sections: List[str] = []
    for bench, img_names in by_bench.items():
        keyed = [[rs[(bench, n)] for n in img_names] for rs in rows]
        result.mean_deltas[bench] = {}
        cells = [bench, str(len(img_names))]
        for m in metrics:
            cells += [fmt_metric(m, _mean([r[m] for r in keyed[i]])) for i in range(len(runs))]
            for i in range(1, len(runs)):
                d = _mean([_delta(a[m], b[m]) for a, b in zip(keyed[0], keyed[i])])
                result.mean_deltas[bench].setdefault(names[i], {})[m] = d
                cells.append(signed_html(m, d, higher_is_better(m)))
        if "psnr" in metrics:
            for i in range(1, len(runs)):
                ds = [_delta(a["psnr"], b["psnr"]) for a, b in zip(keyed[0], keyed[i])]
                cells.append(f"{sum(1 for d in ds if d is not None and d > 0)} / "
                             f"{sum(1 for d in ds if d is not None and d < 0)}")
        summary_rows.append(cells)
        text_rows.append([bench, str(len(img_names))] + [
            _signed_text(m, result.mean_deltas[bench][names[i]][m]) for i in range(1, len(runs)) for m in metrics])
        sections += _bench_section(bench, img_names, runs, names, rows, metrics, zoom, figure_images)
    header = ["Set", "Images"]
    for m in metrics:
        header += [f"{m.upper()} {lab}" for lab in names]
        header += [f"Δ {m.upper()} {lab} − {names[0]}" for lab in names[1:]]
    if "psnr" in metrics:
        header += [f"{lab}: PSNR better / worse than {names[0]} (images)" for lab in names[1:]]
    body += ["<h2>Mean per set</h2>",
             "<p class='note'>Means over the images common to all runs; Δ is the mean of the per-image differences "
             "(images whose value is not finite, such as the infinite PSNR of an identical image, are left out).</p>",
             table(header, summary_rows, raw=True)] + sections
    os.makedirs(output_dir, exist_ok=True)
    write_atomic(target, page(f"Comparison: {' vs '.join(names)}", "compare", body))
    text_header = ["Set", "Images"] + [f"Δ {m} {lab} − {names[0]}" for lab in names[1:] for m in metrics]
    result.text = "\n".join(flags + ["| " + " | ".join(text_header) + " |",
                                     "|" + "---|" * len(text_header)]
                            + ["| " + " | ".join(r) + " |" for r in text_rows])
    return result


def _signed_text(metric: str, delta: Optional[float]) -> str:
    return "–" if delta is None else ("+" if delta > 0 else "") + fmt_metric(metric, delta)


def _head(runs: List[Dict[str, object]], names: List[str], flags: List[str]) -> List[str]:
    run_rows = [[esc(lab), esc(r["summary"]["restorer"]), esc(r["summary"]["protocol"]), str(len(r["rows"])),
                 esc(r["summary"].get("device", "?")), f"<code>{esc(os.path.abspath(r['dir']))}</code>"]
                for lab, r in zip(names, runs)]
    out = [f"<h1>Comparison: {esc(' vs '.join(names))}</h1>",
           table(["Run", "Restorer", "Protocol", "Images", "Device", "Folder"], run_rows, raw=True)]
    out += [f"<p class='flag'>{esc(f)}</p>" for f in flags] or [
        "<p class='note'>Same protocol, same metric settings and the same images in every run.</p>"]
    return out


def _crop_entries(run: Dict[str, object], bench: str) -> Dict[str, Dict[str, object]]:
    crops = run["crops"]
    if not crops:
        return {}
    return {str(e["name"]): e for e in crops["benchmarks"].get(bench, [])}


def _bench_section(bench: str, img_names: List[str], runs: List[Dict[str, object]], names: List[str],
                   rows: List[Dict[Tuple[str, str], Dict[str, object]]], metrics: List[str], zoom: CropRows,
                   figure_images: int) -> List[str]:
    out = [f"<h2 id='{esc(bench)}'>{esc(bench)}</h2>"]
    crops = [_crop_entries(run, bench) for run in runs]
    with_crops = [n for n in img_names if all(n in c for c in crops)]
    last = len(runs) - 1

    def gain(n: str) -> float:
        d = _delta(rows[0][(bench, n)].get("psnr"), rows[last][(bench, n)].get("psnr"))
        return abs(d) if d is not None else -1.0

    shown = sorted(with_crops, key=gain, reverse=True)[:figure_images]
    if shown:
        out.append(f"<p class='note'>{len(shown)} of the {len(with_crops)} images every run kept crops of, largest "
                   f"PSNR difference between {esc(names[0])} and {esc(names[last])} first.</p>")
    else:
        out.append("<p class='note'>No image of this set has crops in every run (runs evaluated before crops were "
                   "kept, or different image sets).</p>")
    for n in shown:
        entries = [c[n] for c in crops]
        boxes = {tuple(e["box"]) for e in entries}
        panels = [(entries[0]["files"]["lq"], "degraded")]
        for i, e in enumerate(entries):
            r = rows[i][(bench, n)]
            caps = []
            for m in metrics:
                cap = f"{m.upper()} {fmt_metric(m, r.get(m))}"
                if i:
                    d = _delta(rows[0][(bench, n)].get(m), r.get(m))
                    cap += " (" + signed_html(m, d, higher_is_better(m)) + ")"
                caps.append(cap)
            panels.append((e["files"]["out"], f"<b>{esc(names[i])}</b><br>" + "<br>".join(caps)))
        panels.append((entries[0]["files"]["gt"], "ground truth"))
        note = "" if len(boxes) == 1 else " <span class='flag'>(crop windows differ between runs)</span>"
        out.append(zoom.row(panels, entries[0]["box"][3], f"{esc(n)}{note}"))
    header = ["Image"]
    for m in metrics:
        header += [f"{m.upper()} {lab}" for lab in names] + [f"Δ {m.upper()} {lab}" for lab in names[1:]]
    table_rows = []
    for n in img_names:
        rs = [r[(bench, n)] for r in rows]
        cells = [esc(n)]
        for m in metrics:
            cells += [fmt_metric(m, r.get(m)) for r in rs]
            cells += [signed_html(m, _delta(rs[0].get(m), r.get(m)), higher_is_better(m)) for r in rs[1:]]
        table_rows.append(cells)
    folded = " open" if len(img_names) <= OPEN_TABLE_ROWS else ""
    out.append(f"<details{folded}><summary>Per image ({len(img_names)}; Δ = run − {esc(names[0])})</summary>"
               + table(header, table_rows, raw=True) + "</details>")
    return out
