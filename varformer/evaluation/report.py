"""Markdown tables of an evaluation: the paper's layout (tasks as columns, PSNR/SSIM cells), published numbers
beside ours, and a per-benchmark table. Every table says what it compares:

- each published row names the protocol it was measured with (``published.yaml``: the table's, or the row's own,
  per column where they differ); a table is shown beside ours only when one of its rows was measured with our
  protocol, and a Δ is printed only against cells measured that way (the others name their protocol instead);
- our value in a column is the mean over the evaluated benchmarks mapped to that column (per-benchmark means,
  then averaged); the column names those sets with their image counts against the expected ones, and a column
  that misses sets or images is marked in the cell itself and gets no Δ;
- the header says which protocol and precision ours ran in, and a run limited to a few images per set
  (``max_images``) says so first.
"""
from __future__ import annotations

import functools
from importlib import resources
from typing import Dict, List, Optional, Sequence, Tuple

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


# ---------------------------------------------------------------------------------------------------------------
# published rows and their protocols
# ---------------------------------------------------------------------------------------------------------------
def row_cells(t: dict, name: str) -> list:
    row = t["rows"][name]
    return row["cells"] if isinstance(row, dict) else row


def row_protocols(t: dict, name: str) -> List[str]:
    """The protocol of each of a row's cells: the row's own (one, or one per column), else the table's."""
    row = t["rows"][name]
    own = row.get("protocol", t["protocol"]) if isinstance(row, dict) else t["protocol"]
    return list(own) if isinstance(own, list) else [own] * len(t["columns"])


def describe_protocols(t: dict, name: str) -> str:
    """"`restormer` (Low-light: `airnet`)": a row's protocol(s) in a cell."""
    protos = row_protocols(t, name)
    main = max(set(protos), key=protos.count)
    others = [f"{c['name']}: {_name(p)}" for c, p in zip(t["columns"], protos) if p != main]
    return _name(main) + (f" ({'; '.join(others)})" if others else "")


def _name(protocol: str) -> str:
    return f"`{protocol}`" if " " not in protocol else protocol


def matched_rows(t: dict, tag: str) -> List[str]:
    """The rows with at least one cell measured with protocol ``tag``."""
    return [n for n in t["rows"] if tag and tag in row_protocols(t, n)]


# ---------------------------------------------------------------------------------------------------------------
# our cells: values, coverage
# ---------------------------------------------------------------------------------------------------------------
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


def short_set(b: dict) -> bool:
    """Fewer images than the set's standard release holds, or a run limited to its first few (``limited_to``)."""
    if b.get("limited_to"):
        return True
    expected = b.get("expected")
    return expected is not None and b.get("images") is not None and b["images"] < expected


def set_count(name: str, b: dict) -> str:
    """"rain100h 2/100 images" (short sets marked SHORT)."""
    if b.get("images") is None:
        return name
    expected = b.get("expected")
    count = f"{b['images']}/{expected} images" if expected is not None else f"{b['images']} images (no expected count)"
    return f"{name} {count}" + (" SHORT" if short_set(b) else "")


def coverage(column: dict, benches: Dict[str, dict], hit: Sequence[str]) -> Tuple[bool, str]:
    """(whether the column is what the published cell measured, the mark for our cell: "(2/5 sets; 12/4,300
    images)"). A column averaging all its sets (``mean_of_all``) needs every set; any column needs full sets."""
    n = len(column["benchmarks"])
    parts = []
    missing = column.get("mean_of_all") and len(hit) < n
    if missing:
        parts.append(f"{len(hit)}/{n} sets")
    short = [b for b in (benches[h] for h in hit) if short_set(b)]
    if short:
        counted = [benches[h] for h in hit if benches[h].get("expected") is not None]
        parts.append(f"{sum(b['images'] for b in counted):,}/{sum(b['expected'] for b in counted):,} images")
    return (bool(hit) and not missing and not short), (f" ({'; '.join(parts)})" if parts else "")


def _columns_note(t: dict, benches: Dict[str, dict], covered) -> str:
    notes = []
    for c, (_, hit) in zip(t["columns"], covered):
        absent = [n for n in c["benchmarks"] if n not in benches]
        what = "mean over " + ", ".join(set_count(h, benches[h]) for h in hit) if hit else "no set evaluated"
        if absent and (c.get("mean_of_all") or not hit):
            what += f" (missing: {', '.join(absent)})"
        notes.append(f"{c['name']} = {what}")
    return "Columns: " + "; ".join(notes) + "."


def _table(header: List[str], rows: List[List[str]]) -> List[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


def measured_as(summary: dict) -> str:
    return f"`{summary['protocol']}`, {summary.get('precision') or 'precision not recorded'}"


# ---------------------------------------------------------------------------------------------------------------
# the tables
# ---------------------------------------------------------------------------------------------------------------
def task_table(summary: dict) -> List[str]:
    benches: Dict[str, dict] = summary["benchmarks"]
    cols = [(t, label, [n for n, b in benches.items() if b["task"] == t]) for t, label in TASK_COLUMNS]
    cols = [c for c in cols if c[2]]
    metrics = summary.get("metrics") or _metrics_of(benches)
    metrics = [m for m in metrics if m in CELL_DIGITS]
    cells = []
    for _, _, names in cols:
        value, _ = _column_value(benches, names, metrics)
        short = any(short_set(benches[n]) for n in names)
        cells.append(_fmt(value, metrics) + (" (SHORT sets)" if short else ""))
    lines = _table(["Method"] + [label for _, label, _ in cols], [[f"ours: {summary['restorer']}"] + cells])
    lines.append("")
    lines.append(f"Cells: {' / '.join(LABELS.get(m, m.upper()) for m in metrics)}. Columns average: "
                 + "; ".join(f"{label} = {', '.join(set_count(n, benches[n]) for n in names)}"
                             for _, label, names in cols) + ".")
    return lines


def _published_rows(t: dict) -> List[List[str]]:
    """The table's rows as published ("–": a cell the paper does not report), each naming its protocol last."""
    d = _digits(t)
    return [[name] + ["–" if cell is None else "/".join(f"{x:.{d[m]}f}" for m, x in zip(t["metrics"], cell))
                      for cell in row_cells(t, name)] + [describe_protocols(t, name)]
            for name in t["rows"]]


def _ours_row(summary: dict, t: dict, covered, absent: str = "missing") -> List[str]:
    benches = summary["benchmarks"]
    cells = []
    for c, (v, hit) in zip(t["columns"], covered):
        _, mark = coverage(c, benches, hit)
        cells.append(_fmt(v, t["metrics"], _digits(t)) + mark if v else absent)
    return [f"**ours: {summary['restorer']}**"] + cells + [measured_as(summary)]


def _delta_rows(summary: dict, t: dict, covered) -> List[List[str]]:
    """Ours minus each published row measured with our protocol (only the headline when it is one of them), per
    column; a cell measured otherwise names its protocol, a partial column of ours says so."""
    tag = summary.get("published_tag") or ""
    matched = matched_rows(t, tag)
    targets = [t["headline"]] if t["headline"] in matched else matched
    benches = summary["benchmarks"]
    out = []
    for name in targets:
        row = [f"Δ ours − {name}"]
        for c, (v, hit), pub, proto in zip(t["columns"], covered, row_cells(t, name), row_protocols(t, name)):
            complete, _ = coverage(c, benches, hit)
            if proto != tag:
                row.append(f"({_name(proto)})")
            elif not v or pub is None:
                row.append("–")
            elif not complete:
                row.append("– (partial)")
            else:
                row.append(_join([_signed(v[m] - p, _digits(t)[m]) if v.get(m) is not None else "–"
                                  for m, p in zip(t["metrics"], pub)]))
        out.append(row + ["same protocol"])
    return out


def _header(t: dict) -> List[str]:
    return ["Method"] + [c["name"] for c in t["columns"]] + ["measured with"]


def published_tables(summary: dict) -> List[str]:
    benches: Dict[str, dict] = summary["benchmarks"]
    tag = summary.get("published_tag") or ""
    out: List[str] = []
    if any(n.startswith("demo-") for n in benches):
        return ["Published numbers are on the real benchmarks; they are not shown beside the demo set."]
    tables = {k: t for k, t in load_published().items() if matched_rows(t, tag)}
    if not tables:
        return [f"No published numbers were measured with protocol '{summary['protocol']}'; none are shown."]
    for key, t in tables.items():
        covered = [_column_value(benches, c["benchmarks"], t["metrics"]) for c in t["columns"]]
        if not any(v and any(x is not None for x in v.values()) for v, _ in covered):
            continue
        out.append(f"**{t['title']}** - rows as published, each with the protocol it was measured with; ours "
                   f"measured with {measured_as(summary)}; Δ only against cells measured with `{tag}`. Source: "
                   f"{t['source']}.")
        out.append("")
        out += _table(_header(t), _published_rows(t) + [_ours_row(summary, t, covered, absent="–")]
                      + _delta_rows(summary, t, covered))
        out += ["", _columns_note(t, benches, covered) + (f" Note: {t['notes']}." if t.get("notes") else "")]
        out += _row_notes(t) + [""]
    return out or [f"No evaluated benchmark matches a column of the published tables for '{tag}'."]


def _row_notes(t: dict) -> List[str]:
    return [f"- {name}: {row['note']}" for name, row in t["rows"].items() if isinstance(row, dict) and row.get("note")]


def paper_table(summary: dict, key: str) -> List[str]:
    """One published table in its own layout (``published.yaml[key]``): ours in every column as the mean over the
    column's benchmarks that were evaluated, marked when sets or images are missing; the published rows (each with
    its protocol) and the Δ only when one of them was measured with ours. The footnote names each column's sets
    with their image counts."""
    t = load_published()[key]
    benches: Dict[str, dict] = summary["benchmarks"]
    tag = summary.get("published_tag") or ""
    covered = [_column_value(benches, c["benchmarks"], t["metrics"]) for c in t["columns"]]
    shown = bool(matched_rows(t, tag))
    rows = ((_published_rows(t) if shown else []) + [_ours_row(summary, t, covered)]
            + (_delta_rows(summary, t, covered) if shown else []))
    lines = [f"**{t['title']}**, ours under {measured_as(summary)}. "
             + (f"Published rows: {t['source']}; Δ only against cells measured with `{tag}`." if shown else
                "No published row was measured with this protocol; they are not shown beside it.")]
    lines += [""] + _table(_header(t), rows) + ["", _columns_note(t, benches, covered)]
    if any(not coverage(c, benches, hit)[0] for c, (_, hit) in zip(t["columns"], covered)):
        lines.append("A marked column misses sets or images: it is not comparable with the published value (the "
                     "published cell measures all of them), and it gets no Δ.")
    return lines + (_row_notes(t) if shown else [])


def benchmark_table(summary: dict) -> List[str]:
    benches: Dict[str, dict] = summary["benchmarks"]
    metrics = _metrics_of(benches)
    header = ["Benchmark", "Task", "Images"] + [LABELS.get(m, m.upper()) for m in metrics] + ["Metrics"]
    rows = []
    for name, b in benches.items():
        exp = "" if b.get("expected") in (None, b["images"]) else \
            f" (expected {b['expected']}{': SHORT' if short_set(b) else ''})"
        row = [name, b["task"], f"{b['images']}{exp}"]
        for m in metrics:
            v = b.get(m)
            row.append(f"{v:.{TABLE_DIGITS[m]}f}" if v is not None else
                       "inf" if m == "psnr" and b.get("psnr_infinite") else "–")
        rows.append(row + [b["metrics"]])
    return _table(header, rows)


def partial_run_note(summary: dict) -> List[str]:
    """The first lines of a run that took only the first ``max_images`` of some set."""
    n = summary.get("max_images")
    if not n or not any(b.get("limited_to") for b in summary["benchmarks"].values()):
        return []
    return [f"**PARTIAL RUN: at most {n} images per set (--max-images {n}).** A quick look: no column is the "
            "published measurement, and no Δ is printed.", ""]


def render_markdown(summary: dict) -> str:
    lines = [f"## Results: `{summary['restorer']}`, protocol `{summary['protocol']}`, "
             f"{summary.get('precision') or 'precision not recorded'} on {summary.get('device', '?')}", "",
             f"Table caption: {summary['caption']}.", ""]
    lines += partial_run_note(summary)
    if summary.get("run_notes"):
        lines += [f"- {n}" for n in summary["run_notes"]] + [""]
    lines += task_table(summary) + [""]
    lines += published_tables(summary) + [""]
    lines += ["Per benchmark:", ""] + benchmark_table(summary) + [""]
    notes = [f"- {name}: {n}" for name, b in summary["benchmarks"].items() for n in b.get("notes", [])]
    if notes:
        lines += ["Notes:", ""] + notes + [""]
    return "\n".join(lines)
