"""Pieces of the self-contained HTML pages (``report.html``, ``compare.html``): page frame and style, markdown
tables as HTML, inline SVG histograms, crop figures with embedded PNGs, and the atomic write.

No script or style from the network: images are base64 data URIs, zooming is CSS (a click toggles a hidden
checkbox), and one small inline script writes how many images decoded into ``#images-decoded`` after load (what the
headless-browser test reads back).
"""
from __future__ import annotations

import base64
import csv
import html
import math
import re
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from varformer.files import write_text_atomic

GENERATOR_PREFIX = "varformer"  # <meta name="generator" content="varformer report|compare">: marks our own files

_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:1200px;padding:0 1em;color:#222}
h1{font-size:1.5em}h2{font-size:1.25em;margin-top:1.6em;border-bottom:1px solid #ccc}h3{font-size:1.05em}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}th,td{border:1px solid #ccc;padding:2px 7px;
text-align:left}th{background:#f3f3f3}td.num{text-align:right}
code{background:#f3f3f3;padding:0 3px}.note{color:#555;font-size:.9em}.flag{color:#a00;font-weight:bold}
.hists{display:flex;flex-wrap:wrap;gap:1em}.hist text{font-size:10px;fill:#333}
.zoom{display:none}.crops{display:flex;flex-wrap:wrap;gap:6px;cursor:zoom-in;margin:.3em 0 1em}
.crops figure{margin:0;text-align:center;font-size:.8em}
.crops img{width:calc(var(--w) * 1.5);image-rendering:pixelated;display:block;border:1px solid #999}
.zoom:checked+.crops{cursor:zoom-out}.zoom:checked+.crops img{width:calc(var(--w) * 4)}
.pos{color:#070}.neg{color:#b00}
"""

_COUNT_SCRIPT = """<script>
window.addEventListener("load", function () {
  var ok = 0, imgs = document.images;
  for (var i = 0; i < imgs.length; i++) { if (imgs[i].complete && imgs[i].naturalWidth > 0) ok++; }
  document.getElementById("images-decoded").textContent = ok + " of " + imgs.length;
});
</script>"""


def esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def page(title: str, generator: str, body: Sequence[str]) -> str:
    """A whole page; ``generator`` ("report" / "compare") marks it as ours (``is_our_page``)."""
    return "\n".join([
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f'<meta name="generator" content="{GENERATOR_PREFIX} {esc(generator)}">',
        f"<title>{esc(title)}</title><style>{_STYLE}</style></head><body>",
        *body,
        '<p class="note">Images decoded: <span id="images-decoded">(needs a browser with scripts)</span>. '
        "Click a row of crops to enlarge it.</p>",
        _COUNT_SCRIPT, "</body></html>", ""])


def is_our_page(path: str, generator: str) -> bool:
    """Whether ``path`` is a page this module wrote with ``generator`` (read from its first 4 kB)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            head = fh.read(4096)
    except OSError:
        return False
    return f'<meta name="generator" content="{GENERATOR_PREFIX} {generator}">' in head


def write_atomic(path: str, text: str) -> None:
    write_text_atomic(path, text)


# ----------------------------------------------------------------------------------------------- markdown -> HTML
def _inline(text: str) -> str:
    out = esc(text)
    out = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", out)
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", out)


_NUMBER = re.compile(r"[−+-]?(inf|[\d.]+)(/[−+-]?(inf|[\d.]+))*( \(.*\))?")


def _td(html_cell: str) -> str:
    """A cell, right-aligned when it reads as a number (tags stripped)."""
    plain = re.sub(r"<[^>]+>", "", html_cell).strip()
    return f'<td class="num">{html_cell}</td>' if _NUMBER.fullmatch(plain) else f"<td>{html_cell}</td>"


def table(header: Sequence[str], rows: Iterable[Sequence[str]], raw: bool = False) -> str:
    """An HTML table; cells are escaped unless ``raw`` (cells already HTML)."""
    cell = (lambda c: str(c)) if raw else _inline
    lines = ["<table><tr>" + "".join(f"<th>{cell(h)}</th>" for h in header) + "</tr>"]
    lines += ["<tr>" + "".join(_td(cell(c)) for c in r) + "</tr>" for r in rows]
    return "\n".join(lines + ["</table>"])


def markdown_to_html(text: str) -> str:
    """The subset of markdown the evaluator's ``results.md`` uses: headings, paragraphs, ``- `` lists, pipe tables,
    ``**bold**`` and ``code``."""
    out: List[str] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        if not line:
            i += 1
        elif line.startswith("|"):
            block = []
            while i < len(lines) and lines[i].strip().startswith("|"):
                block.append([c.strip() for c in lines[i].strip().strip("|").split("|")])
                i += 1
            body = [r for r in block[1:] if not all(re.fullmatch(r":?-+:?", c) for c in r)]
            out.append(table(block[0], body))
        elif line.startswith("#"):
            level = min(len(line) - len(line.lstrip("#")) + 1, 4)
            out.append(f"<h{level}>{_inline(line.lstrip('#').strip())}</h{level}>")
            i += 1
        elif line.startswith("- "):
            items = []
            while i < len(lines) and lines[i].strip().startswith("- "):
                items.append(f"<li>{_inline(lines[i].strip()[2:])}</li>")
                i += 1
            out.append("<ul>" + "".join(items) + "</ul>")
        else:
            para = []
            while i < len(lines) and lines[i].strip() and not lines[i].strip().startswith(("|", "#", "- ")):
                para.append(lines[i].strip())
                i += 1
            out.append(f"<p>{_inline(' '.join(para))}</p>")
    return "\n".join(out)


# ----------------------------------------------------------------------------------------------- histograms
RUG_MAX = 5000  # ticks drawn under a histogram at most (the page stays small for the largest test sets)


def histogram_svg(values: Sequence[float], label: str, width: int = 340, height: int = 150) -> str:
    """An inline SVG histogram of the finite values with a tick per image below it and the mean marked; infinite
    values (identical images' PSNR) are counted in the caption, not drawn."""
    finite = [v for v in values if math.isfinite(v)]
    n_inf = len(values) - len(finite)
    extra = f", {n_inf} not finite (not drawn)" if n_inf else ""
    if not finite:
        return f'<p class="note">{esc(label)}: no finite value{esc(extra)}</p>'
    lo, hi = min(finite), max(finite)
    span = hi - lo or max(abs(hi) * 0.01, 1e-6)
    lo, hi = lo - span * 0.02, hi + span * 0.02
    n_bins = max(5, min(30, int(math.sqrt(len(finite))) + 1))
    counts = [0] * n_bins
    for v in finite:
        counts[min(n_bins - 1, int((v - lo) / (hi - lo) * n_bins))] += 1
    pad_l, plot_h = 30, height - 52
    plot_w = width - pad_l - 10

    def x(v: float) -> float:
        return pad_l + (v - lo) / (hi - lo) * plot_w

    top = max(counts)
    parts = [f'<svg class="hist" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img">',
             f"<title>{esc(label)}: {len(finite)} images{esc(extra)}</title>",
             f'<text x="{pad_l}" y="12">{esc(label)} (n = {len(finite)}{esc(extra)})</text>']
    bw = plot_w / n_bins
    for b, c in enumerate(counts):
        h = c / top * plot_h
        parts.append(f'<rect x="{pad_l + b * bw:.1f}" y="{18 + plot_h - h:.1f}" width="{max(bw - 1, 1):.1f}" '
                     f'height="{h:.1f}" fill="#6a8fc7"><title>{c} images in '
                     f"[{lo + b * (hi - lo) / n_bins:.4g}, {lo + (b + 1) * (hi - lo) / n_bins:.4g})</title></rect>")
    base = 18 + plot_h
    parts.append(f'<line x1="{pad_l}" y1="{base}" x2="{pad_l + plot_w}" y2="{base}" stroke="#333"/>')
    for v in finite[:RUG_MAX]:  # one tick per image: the strip under the histogram
        parts.append(f'<line x1="{x(v):.1f}" y1="{base + 3}" x2="{x(v):.1f}" y2="{base + 11}" stroke="#333" '
                     'stroke-opacity="0.5"/>')
    mean = sum(finite) / len(finite)
    parts.append(f'<line x1="{x(mean):.1f}" y1="16" x2="{x(mean):.1f}" y2="{base + 11}" stroke="#c33" '
                 'stroke-dasharray="3,2"/>')
    parts.append(f'<text x="{pad_l}" y="{height - 6}">{lo:.4g}</text>'
                 f'<text x="{pad_l + plot_w}" y="{height - 6}" text-anchor="end">{hi:.4g}</text>'
                 f'<text x="{x(mean):.1f}" y="{height - 6}" text-anchor="middle" fill="#c33">mean {mean:.4g}</text>')
    parts.append(f'<text x="4" y="{18 + plot_h / 2:.0f}">{top}</text></svg>')
    return "".join(parts)


# ----------------------------------------------------------------------------------------------- crops
def png_data_uri(path: str) -> str:
    with open(path, "rb") as fh:
        return "data:image/png;base64," + base64.b64encode(fh.read()).decode("ascii")


class CropRows:
    """Rows of crops that enlarge on a click: each row gets its own hidden checkbox (unique ids per page)."""

    def __init__(self) -> None:
        self._n = 0

    def row(self, panels: Sequence[Tuple[str, str]], width_px: int, title: Optional[str] = None) -> str:
        """``panels``: (image file, caption HTML) pairs shown side by side at the same scale."""
        self._n += 1
        zid = f"zoom-{self._n}"
        figs = "".join(f'<figure><img src="{png_data_uri(path)}" alt="{esc(re.sub("<[^>]+>", " ", cap))}">'
                       f"<figcaption>{cap}</figcaption></figure>" for path, cap in panels)
        head = f"<h4>{title}</h4>" if title else ""
        return (f'{head}<input type="checkbox" class="zoom" id="{zid}">'
                f'<label class="crops" for="{zid}" style="--w:{int(width_px)}px">{figs}</label>')


def fmt_metric(name: str, value: Optional[float]) -> str:
    if value is None:
        return "–"
    if math.isinf(value):
        return "inf"
    return f"{value:.2f}" if name == "psnr" else f"{value:.4f}"


def signed_html(name: str, delta: Optional[float], higher_is_better: bool) -> str:
    """A difference, green when better and red when worse."""
    if delta is None or not math.isfinite(delta):
        return "–"
    text = fmt_metric(name, delta)
    text = ("+" + text) if delta > 0 else text.replace("-", "−")
    good = (delta > 0) == higher_is_better
    return text if delta == 0 else f'<span class="{"pos" if good else "neg"}">{text}</span>'


def metric_columns(fields: Sequence[str]) -> List[str]:
    """The metric columns of a per_image.csv (every column but the image's identity and size)."""
    return [f for f in fields if f not in ("benchmark", "task", "name", "height", "width")]


LOWER_IS_BETTER = ("lpips", "dists", "niqe", "fid")


def higher_is_better(metric: str) -> bool:
    return metric.lower() not in LOWER_IS_BETTER


def read_per_image(path: str) -> Tuple[List[str], List[Dict[str, object]]]:
    """(metric columns, rows with metric values as floats) of a per_image.csv; a column holding text is not a
    metric and stays text."""
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        fields = list(reader.fieldnames or [])
        rows: List[Dict[str, object]] = [dict(r) for r in reader]
    metrics = []
    for m in metric_columns(fields):
        try:
            values = [float(r[m]) if r[m] not in (None, "") else None for r in rows]
        except ValueError:
            continue
        metrics.append(m)
        for r, v in zip(rows, values):
            r[m] = v
    return metrics, rows
