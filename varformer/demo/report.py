"""``demo.html``: the demo's own page, beside the evaluator's ``report.html`` of each row.

One self-contained file (images as base64 data URIs, charts as inline SVG, no script or style from the network),
written atomically: the demo's table, per task one test image before and after (degraded | each restorer |
target, at native resolution as the ``full`` protocol runs it, with its PSNR), the loss curve and validation PSNR
of every training stage, and links to the evaluator's reports.
"""
from __future__ import annotations

import base64
import io
import math
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image

from varformer.data.benchmark_data import benchmark_dataset
from varformer.evaluation.html_page import esc, markdown_to_html, page
from varformer.evaluation.protocols import get_protocol
from varformer.evaluation.evaluate import run_restorer
from varformer.files import write_text_atomic
from varformer.inference import Restorer
from varformer.metrics import psnr

REPORT_FILE = "demo.html"
Series = Sequence[Tuple[float, float]]
_COLOURS = ("#3366aa", "#cc5533", "#449944", "#884499", "#aa8800")


def png_uri(x_3HW: torch.Tensor) -> str:
    """An image tensor in [0, 1] as a PNG data URI (8-bit, rounded)."""
    arr = x_3HW.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(arr)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def line_chart_svg(series: Dict[str, Series], title: str, y_label: str, width: int = 520,
                   height: int = 220) -> str:
    """An inline SVG line chart: x = training step, one polyline (with dots) per named series."""
    points = [(x, y) for s in series.values() for x, y in s if math.isfinite(y)]
    if not points:
        return f'<p class="note">{esc(title)}: nothing logged</p>'
    x_lo, x_hi = min(p[0] for p in points), max(p[0] for p in points)
    y_lo, y_hi = min(p[1] for p in points), max(p[1] for p in points)
    x_hi, y_span = (x_hi if x_hi > x_lo else x_lo + 1), (y_hi - y_lo) or max(abs(y_hi) * 0.05, 1e-3)
    y_lo, y_hi = y_lo - 0.05 * y_span, y_hi + 0.05 * y_span
    left, right, top, bottom = 52, 10, 22, 34
    pw, ph = width - left - right, height - top - bottom

    def xy(x: float, y: float) -> str:
        return f"{left + (x - x_lo) / (x_hi - x_lo) * pw:.1f},{top + (1 - (y - y_lo) / (y_hi - y_lo)) * ph:.1f}"

    parts = [f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img">',
             f"<title>{esc(title)}</title>", f'<text x="{left}" y="14" font-size="12">{esc(title)}</text>',
             f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>']
    for frac in (0.0, 0.5, 1.0):
        y = y_lo + frac * (y_hi - y_lo)
        parts.append(f'<text x="{left - 4}" y="{top + (1 - frac) * ph + 4:.1f}" font-size="10" '
                     f'text-anchor="end">{y:.3g}</text>')
    parts.append(f'<text x="{left}" y="{height - 18}" font-size="10">{x_lo:g}</text>'
                 f'<text x="{left + pw}" y="{height - 18}" font-size="10" text-anchor="end">{x_hi:g}</text>'
                 f'<text x="{left + pw / 2:.0f}" y="{height - 4}" font-size="10" text-anchor="middle">step</text>'
                 f'<text x="12" y="{top + ph / 2:.0f}" font-size="10" transform="rotate(-90 12 {top + ph / 2:.0f})" '
                 f'text-anchor="middle">{esc(y_label)}</text>')
    for k, (name, s) in enumerate(series.items()):
        colour = _COLOURS[k % len(_COLOURS)]
        pts = [(x, y) for x, y in s if math.isfinite(y)]
        if not pts:
            continue
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" '
                     f'points="{" ".join(xy(x, y) for x, y in pts)}"/>')
        parts += [f'<circle cx="{xy(x, y).split(",")[0]}" cy="{xy(x, y).split(",")[1]}" r="2" fill="{colour}">'
                  f"<title>{esc(name)}: step {x:g}, {y:.4g}</title></circle>" for x, y in pts]
        parts.append(f'<text x="{left + pw - 4}" y="{top + 14 + 13 * k}" font-size="11" text-anchor="end" '
                     f'fill="{colour}">{esc(name)}</text>')
    return "".join(parts + ["</svg>"])


def training_charts(stage: str, history: Sequence[Dict[str, float]]) -> List[str]:
    """The loss curve of a stage (every logged ``loss/*`` term) and, if it validated, its validation PSNR
    against the identity's."""
    terms = sorted({k for h in history for k in h if k.startswith("loss/")}, key=lambda k: (k != "loss/total", k))
    losses = {k[len("loss/"):]: [(h["step"], h[k]) for h in history if k in h] for k in terms}
    out = [line_chart_svg(losses, f"{stage}: training loss (mean since the previous log line)", "loss")]
    vals = [h for h in history if "val/psnr" in h]
    if vals:
        series = {"model": [(h["step"], h["val/psnr"]) for h in vals]}
        if any("val/psnr_input" in h for h in vals):
            series["identity (input)"] = [(h["step"], h["val/psnr_input"]) for h in vals if "val/psnr_input" in h]
        out.append(line_chart_svg(series, f"{stage}: validation PSNR (held-out images)", "PSNR (dB)"))
    return out


def before_after(restorers: Sequence[Restorer], demo_dir: str, benches: Sequence[str]) -> List[str]:
    """Per benchmark its first test image: degraded | each restorer but the identity | target, at native
    resolution (the ``full`` protocol's tiling), each with its PSNR to the target."""
    full = get_protocol("full")
    rows = []
    for name in benches:
        item = benchmark_dataset(name, demo_dir)[0]
        lq, gt = item["lq"].float()[None], item["gt"].float()[None]
        panels = [(f"degraded · {float(psnr(lq, gt)):.2f} dB", lq[0])]
        for r in restorers:
            if r.name == "identity":
                continue
            out = run_restorer(r, lq.to(r.device), full).cpu()
            panels.append((f"{r.name} · {float(psnr(out, gt)):.2f} dB", out[0]))
        panels.append(("target", gt[0]))
        figs = "".join(f'<figure><img src="{png_uri(x)}" alt="{esc(cap)}"><figcaption>{esc(cap)}</figcaption>'
                       "</figure>" for cap, x in panels)
        rows.append(f"<h3>{esc(name)} <span class='note'>({esc(item.get('name', ''))})</span></h3>"
                    f'<div class="crops" style="--w:{lq.shape[-1] // 2}px">{figs}</div>')
    return rows


def render_demo_report(title: str, table_md: str, images: Sequence[str], stages: Sequence[Tuple[str, str, list]],
                       reports: Dict[Tuple[str, str], str], notes: Sequence[str], base_dir: str) -> str:
    """The page: ``stages`` are (stage, config file, history); ``reports`` (restorer, protocol) -> its folder."""
    body = [f"<h1>{esc(title)}</h1>", "<h2>Results</h2>", markdown_to_html(table_md)]
    body += [f'<p class="note">{esc(n)}</p>' for n in notes if n]
    if images:
        body += ["<h2>Before and after</h2>", '<p class="note">One test image per task at native resolution: '
                 "the degraded input, the restored output and the target, with PSNR to the target.</p>", *images]
    if stages:
        body.append("<h2>Training</h2>")
        for stage, config_file, history in stages:
            body.append(f"<h3>{esc(stage)} <span class='note'>({esc(config_file)})</span></h3>")
            body.append('<div class="hists">' + "".join(training_charts(stage, history)) + "</div>")
    if reports:
        links = [f'<li><a href="{esc(os.path.relpath(os.path.join(d, "report.html"), base_dir))}">'
                 f"{esc(name)}, protocol {esc(proto)}</a></li>" for (name, proto), d in reports.items()]
        body += ["<h2>Evaluation reports</h2>", "<ul>" + "".join(links) + "</ul>"]
    return page(title, "demo", body)


def write_demo_report(folder: str, title: str, table_md: str, restorers: Sequence[Restorer], demo_dir: str,
                      benches: Sequence[str], stages: Sequence[Tuple[str, str, list]],
                      reports: Optional[Dict[Tuple[str, str], str]] = None, notes: Sequence[str] = ()) -> str:
    """Write ``folder/demo.html`` (atomically) and return its path."""
    os.makedirs(folder, exist_ok=True)
    images = before_after(restorers, demo_dir, benches) if any(r.name != "identity" for r in restorers) else []
    path = os.path.join(folder, REPORT_FILE)
    write_text_atomic(path, render_demo_report(title, table_md, images, stages, reports or {}, notes, folder))
    return path
