"""Markdown tables of an evaluation: the paper's layout (tasks as columns, PSNR/SSIM cells), published numbers
beside ours with the delta - only under the preset they were measured with - and a per-benchmark table.

Published numbers live in ``varformer/resources/published.yaml`` (each table names its source and the metrics its
cells hold, e.g. PSNR/SSIM/LPIPS or MUSIQ/CLIP-IQA). Our value in a column is the mean over the evaluated
benchmarks mapped to that column (per-benchmark means, then averaged), and the footnote names them.
"""
from __future__ import annotations

import functools
from importlib import resources
from typing import Dict, List, Optional, Sequence

import yaml

# the VarFormer table's order first, then the tasks it does not report
TASK_COLUMNS = (("rain", "Deraining"), ("blur", "Deblurring"), ("lowlight", "Low-light"), ("haze", "Dehazing"),
                ("noise", "Denoising"), ("realnoise", "Real denoising"), ("snow", "Desnowing"),
                ("udc", "Under-display camera"), ("mixed", "Mixed"), ("sr", "Super-resolution"))
# decimals per metric: in the paper-style cells (as the papers print them) and in the per-benchmark table
CELL_DIGITS = {"psnr": 2, "ssim": 3, "lpips": 3, "musiq": 3, "clipiqa": 3, "maniqa": 4, "niqe": 3, "liqe": 3,
               "qalign": 3, "piqe": 2, "fid": 2}
TABLE_DIGITS = {**CELL_DIGITS, "ssim": 4, "lpips": 4, "clipiqa": 4, "maniqa": 4}
LABELS = {"psnr": "PSNR (dB)", "ssim": "SSIM", "lpips": "LPIPS", "clipiqa": "CLIP-IQA", "qalign": "Q-Align"}


@functools.lru_cache(maxsize=1)
def load_published() -> Dict[str, dict]:
    text = resources.files("varformer").joinpath("resources/published.yaml").read_text()
    return yaml.safe_load(text)


def _metrics_of(benches: Dict[str, dict]) -> List[str]:
    """The metrics present in a summary's benchmarks, in display order."""
    present = {k for b in benches.values() for k in b}
    return [m for m in CELL_DIGITS if m in present]


def _join(parts: List[str]) -> str:
    """Cell parts with trailing missing values dropped; "–" when nothing is there."""
    while parts and parts[-1] == "–":
        parts = parts[:-1]
    return "/".join(parts) if parts else "–"


def _digits(t: dict) -> Dict[str, int]:
    """A published table's decimals: its own ``digits`` (as the paper prints them) over the defaults."""
    return {**CELL_DIGITS, **(t.get("digits") or {})}


def _fmt(values: Optional[Dict[str, Optional[float]]], metrics: Sequence[str],
         digits: Optional[Dict[str, int]] = None) -> str:
    """One cell: the metrics' values joined with "/" (PSNR None beside other values: identical images, "inf")."""
    if not values or all(values.get(m) is None for m in metrics):
        return "–"
    digits = digits or CELL_DIGITS
    return _join([f"{values[m]:.{digits[m]}f}" if values.get(m) is not None else
                  ("inf" if m == "psnr" else "–") for m in metrics])


def _signed(v: float, digits: int) -> str:
    return f"{v:+.{digits}f}".replace("-", "−")


def _mean(values: Sequence[Optional[float]]) -> Optional[float]:
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


def _column_value(benches: Dict[str, dict], names: Sequence[str], metrics: Sequence[str]):
    """(metric -> mean over the column's evaluated benchmarks, those benchmarks); a metric missing in one of them
    is None (the column would not be the published average)."""
    hit = [n for n in names if n in benches]
    if not hit:
        return None, []
    values = {m: (_mean([benches[n].get(m) for n in hit]) if all(m in benches[n] for n in hit) else None)
              for m in metrics}
    return values, hit


def _table(header: List[str], rows: List[List[str]]) -> List[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


def task_table(summary: dict) -> List[str]:
    benches: Dict[str, dict] = summary["benchmarks"]
    cols = [(t, label, [n for n, b in benches.items() if b["task"] == t]) for t, label in TASK_COLUMNS]
    cols = [c for c in cols if c[2]]
    metrics = summary.get("metrics") or _metrics_of(benches)
    metrics = [m for m in metrics if m in CELL_DIGITS]
    cells = []
    for _, _, names in cols:
        value, _ = _column_value(benches, names, metrics)
        cells.append(_fmt(value, metrics))
    lines = _table(["Method"] + [label for _, label, _ in cols], [[f"ours: {summary['restorer']}"] + cells])
    lines.append("")
    lines.append(f"Cells: {' / '.join(LABELS.get(m, m.upper()) for m in metrics)}. Columns average: "
                 + "; ".join(f"{label} = {', '.join(names)}" for _, label, names in cols) + ".")
    return lines


def published_tables(summary: dict) -> List[str]:
    benches: Dict[str, dict] = summary["benchmarks"]
    tag = summary.get("published_tag") or ""
    out: List[str] = []
    if any(n.startswith("demo-") for n in benches):
        return ["Published numbers are on the real benchmarks; they are not shown beside the demo set."]
    tables = {k: t for k, t in load_published().items() if tag and t["protocol"] == tag}
    if not tables:
        return [f"No published numbers were measured with protocol '{summary['protocol']}'; none are shown."]
    for key, t in tables.items():
        covered = [_column_value(benches, c["benchmarks"], t["metrics"]) for c in t["columns"]]
        if not any(v and any(x is not None for x in v.values()) for v, _ in covered):
            continue
        header = ["Method"] + [c["name"] for c in t["columns"]]
        ours = [f"**ours: {summary['restorer']}**"] + [_fmt(v, t["metrics"], _digits(t)) + _partial(c, hit)
                                                        for c, (v, hit) in zip(t["columns"], covered)]
        out.append(f"**{t['title']}** - rows as published; ours measured with preset `{summary['protocol']}`, "
                   f"the protocol this table is matched to (`{t['protocol']}`). Source: {t['source']}.")
        out.append("")
        out += _table(header, _published_rows(t) + [ours, _delta_row(t, covered)])
        used = [f"{c['name']} = {', '.join(hit)}" for c, (v, hit) in zip(t["columns"], covered) if hit]
        out.append("")
        out.append("Ours per column: " + "; ".join(used) + "." + (f" Note: {t['notes']}." if t.get("notes") else ""))
        out.append("")
    return out or [f"No evaluated benchmark matches a column of the published tables for '{tag}'."]


def _partial(column: dict, hit: Sequence[str]) -> str:
    """" (k/n sets)" for a column published as the mean over all its sets (``mean_of_all``) of which only k were
    evaluated; other columns list alternative sources of one set."""
    n = len(column["benchmarks"])
    return f" ({len(hit)}/{n} sets)" if column.get("mean_of_all") and hit and len(hit) < n else ""


def _published_rows(t: dict) -> List[List[str]]:
    """The table's rows as published ("–": a cell the paper does not report, None in published.yaml)."""
    d = _digits(t)
    return [[name] + ["–" if cell is None else "/".join(f"{x:.{d[m]}f}" for m, x in zip(t["metrics"], cell))
                      for cell in cells]
            for name, cells in t["rows"].items()]


def _delta_row(t: dict, covered) -> List[str]:
    """Ours minus the table's headline row, per column and metric ("–" where either value is missing)."""
    delta = [f"Δ ours − {t['headline']}"]
    for (v, _), pub in zip(covered, t["rows"][t["headline"]]):
        if not v or pub is None:
            delta.append("–")
            continue
        delta.append(_join([_signed(v[m] - p, _digits(t)[m]) if v.get(m) is not None else "–"
                            for m, p in zip(t["metrics"], pub)]))
    return delta


def paper_table(summary: dict, key: str) -> List[str]:
    """One published table in its own layout (``published.yaml[key]``): ours in every column as the mean over the
    column's benchmarks that were evaluated, marked ``(k/n sets)`` when some are missing; the published rows and
    the delta only when ``summary`` was measured with the table's protocol. The footnote says which sets each
    column averaged and which are missing."""
    t = load_published()[key]
    benches: Dict[str, dict] = summary["benchmarks"]
    matched = bool(summary.get("published_tag")) and summary["published_tag"] == t["protocol"]
    covered = [_column_value(benches, c["benchmarks"], t["metrics"]) for c in t["columns"]]
    ours = [f"**ours: {summary['restorer']}**"]
    for c, (v, hit) in zip(t["columns"], covered):
        partial = f" ({len(hit)}/{len(c['benchmarks'])} sets)" if v and len(hit) < len(c["benchmarks"]) else ""
        ours.append(_fmt(v, t["metrics"], _digits(t)) + partial if v else "missing")
    rows = (_published_rows(t) + [ours, _delta_row(t, covered)]) if matched else [ours]
    lines = [f"**{t['title']}**, ours under protocol `{summary['protocol']}`. "
             + (f"Published rows: {t['source']}." if matched else
                f"The published rows were measured with protocol `{t['protocol']}` and are not shown beside this "
                "one.")]
    lines += [""] + _table(["Method"] + [c["name"] for c in t["columns"]], rows) + [""]
    notes = []
    for c, (_, hit) in zip(t["columns"], covered):
        absent = [n for n in c["benchmarks"] if n not in benches]
        what = f"mean over {', '.join(hit)}" if hit else "no set evaluated"
        notes.append(f"{c['name']} = {what}" + (f" (missing: {', '.join(absent)})" if absent else ""))
    lines.append("Columns: " + "; ".join(notes) + ".")
    if any(v and len(hit) < len(c["benchmarks"]) for c, (v, hit) in zip(t["columns"], covered)):
        lines.append("A column that misses some of its sets is not comparable with the published value (the "
                     "published cell is the mean over all of them).")
    return lines


def benchmark_table(summary: dict) -> List[str]:
    benches: Dict[str, dict] = summary["benchmarks"]
    metrics = _metrics_of(benches)
    header = ["Benchmark", "Task", "Images"] + [LABELS.get(m, m.upper()) for m in metrics] + ["Metrics"]
    rows = []
    for name, b in benches.items():
        exp = "" if b.get("expected") in (None, b["images"]) else f" (expected {b['expected']})"
        row = [name, b["task"], f"{b['images']}{exp}"]
        for m in metrics:
            v = b.get(m)
            row.append(f"{v:.{TABLE_DIGITS[m]}f}" if v is not None else
                       "inf" if m == "psnr" and b.get("psnr_infinite") else "–")
        rows.append(row + [b["metrics"]])
    return _table(header, rows)


def render_markdown(summary: dict) -> str:
    lines = [f"## Results: `{summary['restorer']}`, protocol `{summary['protocol']}`", "",
             f"Table caption: {summary['caption']}.", ""]
    if summary.get("run_notes"):
        lines += [f"- {n}" for n in summary["run_notes"]] + [""]
    lines += task_table(summary) + [""]
    lines += published_tables(summary) + [""]
    lines += ["Per benchmark:", ""] + benchmark_table(summary) + [""]
    notes = [f"- {name}: {n}" for name, b in summary["benchmarks"].items() for n in b.get("notes", [])]
    if notes:
        lines += ["Notes:", ""] + notes + [""]
    return "\n".join(lines)
