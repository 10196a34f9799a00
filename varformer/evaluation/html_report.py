"""``report.html``: the visual report of one evaluation, rendered from the evaluator's outputs alone.

It reads ``summary.json``, ``results.md``, ``per_image.csv`` and ``crops/index.json`` (``varformer.evaluation.crops``)
of a run folder and writes one self-contained page beside them: the tables, per benchmark the distribution of every
per-image metric (inline SVG histograms with one tick per image), and crops of the worst and best images by PSNR
(degraded | restored | ground truth, the same window in the three, enlarged by a click), with the fixed sample of
images every run keeps (what ``varformer compare`` shows side by side) folded below.
"""
from __future__ import annotations

import json
import os
from typing import Dict, List, Optional

from varformer.errors import DataError
from varformer.evaluation.crops import read_crop_index
from varformer.evaluation.html_page import (CropRows, esc, fmt_metric, histogram_svg, markdown_to_html, page,
                                            read_per_image, write_atomic)

REPORT_FILE = "report.html"


def load_run(run_dir: str) -> Dict[str, object]:
    """The evaluator's outputs in ``run_dir``: summary, metric columns, per-image rows, crop index (or None)."""
    summary_path = os.path.join(run_dir, "summary.json")
    if not os.path.isfile(summary_path):
        subs = sorted(d for d in os.listdir(run_dir) if os.path.isfile(os.path.join(run_dir, d, "summary.json"))) \
            if os.path.isdir(run_dir) else []
        hint = f"; it holds runs in {', '.join(os.path.join(run_dir, d) for d in subs)}" if subs else ""
        raise DataError(f"{run_dir} is not an evaluation run folder (no summary.json from 'varformer evaluate'){hint}")
    try:
        with open(summary_path) as fh:
            summary = json.load(fh)
        metrics, rows = read_per_image(os.path.join(run_dir, "per_image.csv"))
    except (OSError, ValueError) as e:
        raise DataError(f"unreadable evaluation outputs in {run_dir} ({type(e).__name__}: {e})") from None
    return {"dir": run_dir, "summary": summary, "metrics": metrics, "rows": rows,
            "crops": read_crop_index(run_dir)}


def _crop_caption(kind: str, row: Optional[Dict[str, object]], metrics: List[str]) -> str:
    label = {"lq": "degraded", "out": "restored", "gt": "ground truth"}[kind]
    if kind != "out" or row is None:
        return label
    scores = " · ".join(f"{m.upper()} {fmt_metric(m, row.get(m))}" for m in metrics)
    return f"{label}<br>{esc(scores)}"


def _gallery(entries: List[Dict[str, object]], rows: Dict[str, Dict[str, object]], metrics: List[str],
             zoom: CropRows) -> List[str]:
    """Worst, then best (those not already shown), then the fixed sample, folded."""
    out: List[str] = []
    shown = set()
    for kind, title in (("worst", "Worst by PSNR"), ("best", "Best by PSNR"), ("sample", "Fixed sample")):
        picked = sorted((e for e in entries if kind in e["kept_as"] and e["name"] not in shown),
                        key=lambda e: e["kept_as"][kind])
        if not picked:
            continue
        block = []
        for e in picked:
            shown.add(e["name"])
            top, left, h, w = e["box"]
            H, W = e["image_hw"]
            title_html = (f"{esc(e['name'])} <span class='note'>({kind} {e['kept_as'][kind]}; crop {h}x{w} at "
                          f"({top}, {left}) of {H}x{W})</span>")
            panels = [(e["files"][k], _crop_caption(k, rows.get(e["name"]), metrics)) for k in ("lq", "out", "gt")]
            block.append(zoom.row(panels, w, title_html))
        if kind == "sample":
            out.append(f"<details><summary>{title}: {len(picked)} more image(s), the same in every run on this set "
                       "(what <code>varformer compare</code> shows)</summary>" + "".join(block) + "</details>")
        else:
            out.append(f"<h3>{title}</h3>" + "".join(block))
    return out


def render_report(run: Dict[str, object], results_md: str) -> str:
    summary = run["summary"]
    metrics: List[str] = run["metrics"]
    crops = run["crops"]
    title = f"Evaluation: {summary['restorer']}, protocol {summary['protocol']}"
    body = [f"<h1>{esc(title)}</h1>",
            f"<p class='note'>Device {esc(summary.get('device', '?'))}, {esc(summary.get('seconds', '?'))} s. "
            f"Run folder: <code>{esc(os.path.abspath(run['dir']))}</code>.</p>",
            "<h2>Tables</h2>", markdown_to_html(results_md)]
    zoom = CropRows()
    by_bench: Dict[str, List[Dict[str, object]]] = {}
    for r in run["rows"]:
        by_bench.setdefault(str(r["benchmark"]), []).append(r)
    for bench, rows in by_bench.items():
        entry = summary.get("benchmarks", {}).get(bench, {})
        body.append(f"<h2 id='{esc(bench)}'>{esc(bench)}</h2>")
        body.append(f"<p class='note'>{len(rows)} images; task {esc(entry.get('task', '?'))}; metrics "
                    f"{esc(entry.get('metrics', '?'))}.</p>")
        hists = [histogram_svg([r[m] for r in rows if r.get(m) is not None], m.upper()) for m in metrics]
        body.append("<div class='hists'>" + "".join(hists) + "</div>")
        entries = (crops or {}).get("benchmarks", {}).get(bench) if crops else None
        if entries:
            body += _gallery(entries, {str(r["name"]): r for r in rows}, metrics, zoom)
        else:
            body.append("<p class='note'>No crops were kept for this set.</p>")
    if crops:
        body.append(f"<p class='note'>Crops: {crops['crop_size']} px windows of the evaluated images (after the "
                    "protocol's resize) where the degradation and the ground truth's detail are largest, chosen "
                    "from the degraded and ground-truth images only, so every run on this protocol crops the same "
                    f"place; {crops['keep']} worst, best and sample images per set.</p>")
    return page(title, "report", body)


def write_html_report(run_dir: str) -> str:
    """Render ``report.html`` in ``run_dir`` from the files the evaluator wrote there; returns its path."""
    run = load_run(run_dir)
    md_path = os.path.join(run_dir, "results.md")
    results_md = ""
    if os.path.isfile(md_path):
        with open(md_path, encoding="utf-8") as fh:
            results_md = fh.read()
    path = os.path.join(run_dir, REPORT_FILE)
    write_atomic(path, render_report(run, results_md))
    return path
