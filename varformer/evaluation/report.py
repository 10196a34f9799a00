"""Markdown tables of an evaluation: the paper's layout (tasks as columns, PSNR/SSIM cells), published numbers
beside ours with the delta - only under the preset they were measured with - and a per-benchmark table.

Published numbers live in ``varformer/resources/published.yaml`` (each table names its source).
Our value in a column is the mean over the evaluated benchmarks mapped to that column (per-benchmark means,
then averaged), and the footnote names them.
"""
from __future__ import annotations

import functools
from importlib import resources
from typing import Dict, List, Optional, Sequence

import yaml

# the VarFormer table's order first, then the tasks it does not report
TASK_COLUMNS = (("rain", "Deraining"), ("blur", "Deblurring"), ("lowlight", "Low-light"), ("haze", "Dehazing"),
                ("noise", "Denoising"), ("realnoise", "Real denoising"))


@functools.lru_cache(maxsize=1)
def load_published() -> Dict[str, dict]:
    text = resources.files("varformer").joinpath("resources/published.yaml").read_text()
    return yaml.safe_load(text)


def _fmt(psnr: Optional[float], ssim: Optional[float], lpips: Optional[float] = None) -> str:
    if psnr is None and ssim is None:
        return "–"
    cell = f"{psnr:.2f}/{ssim:.3f}" if psnr is not None else f"inf/{ssim:.3f}"
    return cell + (f"/{lpips:.3f}" if lpips is not None else "")


def _signed(v: float, digits: int) -> str:
    return f"{v:+.{digits}f}".replace("-", "−")


def _mean(values: Sequence[Optional[float]]) -> Optional[float]:
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


def _column_value(benches: Dict[str, dict], names: Sequence[str]):
    hit = [n for n in names if n in benches]
    if not hit:
        return None, []
    ps = _mean([benches[n]["psnr"] for n in hit])
    ss = _mean([benches[n]["ssim"] for n in hit])
    lp = _mean([benches[n].get("lpips") for n in hit]) if all("lpips" in benches[n] for n in hit) else None
    return (ps, ss, lp), hit


def _table(header: List[str], rows: List[List[str]]) -> List[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


def task_table(summary: dict) -> List[str]:
    benches: Dict[str, dict] = summary["benchmarks"]
    cols = [(t, label, [n for n, b in benches.items() if b["task"] == t]) for t, label in TASK_COLUMNS]
    cols = [c for c in cols if c[2]]
    cells = []
    for _, _, names in cols:
        value, _ = _column_value(benches, names)
        cells.append(_fmt(*value))
    lines = _table(["Method"] + [label for _, label, _ in cols], [[f"ours: {summary['restorer']}"] + cells])
    lines.append("")
    lines.append("Columns average: " + "; ".join(f"{label} = {', '.join(names)}" for _, label, names in cols) + ".")
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
        covered = [_column_value(benches, c["benchmarks"]) for c in t["columns"]]
        if not any(v for v, _ in covered):
            continue
        with_lpips = "lpips" in t["metrics"]
        header = ["Method"] + [c["name"] for c in t["columns"]]
        ours = [f"**ours: {summary['restorer']}**"] + [
            _fmt(v[0], v[1], v[2] if with_lpips else None) if v else "–" for v, _ in covered]
        out.append(f"**{t['title']}** - rows as published; ours measured with preset `{summary['protocol']}`, "
                   f"the protocol this table is matched to (`{t['protocol']}`). Source: {t['source']}.")
        out.append("")
        out += _table(header, _published_rows(t) + [ours, _delta_row(t, covered)])
        used = [f"{c['name']} = {', '.join(hit)}" for c, (v, hit) in zip(t["columns"], covered) if hit]
        out.append("")
        out.append("Ours per column: " + "; ".join(used) + "." + (f" Note: {t['notes']}." if t.get("notes") else ""))
        out.append("")
    return out or [f"No evaluated benchmark matches a column of the published tables for '{tag}'."]


def _published_rows(t: dict) -> List[List[str]]:
    """The table's rows as published ("–": a cell the paper does not report, None in published.yaml)."""
    return [[name] + ["–" if cell is None else "/".join(f"{x:.2f}" if i == 0 else f"{x:.3f}"
                                                        for i, x in enumerate(cell)) for cell in cells]
            for name, cells in t["rows"].items()]


def _delta_row(t: dict, covered) -> List[str]:
    """Ours minus the table's headline row, per column ("–" where we have no value)."""
    with_lpips = "lpips" in t["metrics"]
    delta = [f"Δ ours − {t['headline']}"]
    for (v, _), pub in zip(covered, t["rows"][t["headline"]]):
        if not v or v[0] is None or pub is None:
            delta.append("–")
            continue
        d = f"{_signed(v[0] - pub[0], 2)}/{_signed(v[1] - pub[1], 3)}"
        if with_lpips and v[2] is not None and len(pub) > 2:
            d += f"/{_signed(v[2] - pub[2], 3)}"
        delta.append(d)
    return delta


def paper_table(summary: dict, key: str) -> List[str]:
    """One published table in its own layout (``published.yaml[key]``): ours in every column as the mean over the
    column's benchmarks that were evaluated, marked ``(k/n sets)`` when some are missing; the published rows and
    the delta only when ``summary`` was measured with the table's protocol. The footnote says which sets each
    column averaged and which are missing."""
    t = load_published()[key]
    benches: Dict[str, dict] = summary["benchmarks"]
    matched = bool(summary.get("published_tag")) and summary["published_tag"] == t["protocol"]
    covered = [_column_value(benches, c["benchmarks"]) for c in t["columns"]]
    ours = [f"**ours: {summary['restorer']}**"]
    for c, (v, hit) in zip(t["columns"], covered):
        partial = f" ({len(hit)}/{len(c['benchmarks'])} sets)" if v and len(hit) < len(c["benchmarks"]) else ""
        ours.append(_fmt(v[0], v[1]) + partial if v else "missing")
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
    with_lpips = any("lpips" in b for b in benches.values())
    header = ["Benchmark", "Task", "Images", "PSNR (dB)", "SSIM"] + (["LPIPS"] if with_lpips else []) + ["Metrics"]
    rows = []
    for name, b in benches.items():
        exp = "" if b.get("expected") in (None, b["images"]) else f" (expected {b['expected']})"
        psnr = "inf" if b["psnr"] is None else f"{b['psnr']:.2f}"
        row = [name, b["task"], f"{b['images']}{exp}", psnr, f"{b['ssim']:.4f}"]
        if with_lpips:
            row.append(f"{b['lpips']:.4f}" if "lpips" in b else "–")
        rows.append(row + [b["metrics"]])
    return _table(header, rows)


def render_markdown(summary: dict) -> str:
    lines = [f"## Results: `{summary['restorer']}`, protocol `{summary['protocol']}`", "",
             f"Table caption: {summary['caption']}.", ""]
    lines += task_table(summary) + [""]
    lines += published_tables(summary) + [""]
    lines += ["Per benchmark:", ""] + benchmark_table(summary) + [""]
    notes = [f"- {name}: {n}" for name, b in summary["benchmarks"].items() for n in b.get("notes", [])]
    if notes:
        lines += ["Notes:", ""] + notes + [""]
    return "\n".join(lines)
