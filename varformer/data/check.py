"""``varformer data check ROOT``: which known benchmarks are under a root, and what is wrong with each.

Per benchmark found: the pair count, the expected count of the standard release, how pairs were made (name rule
or listing order), every unpaired file, every unreadable file and every LQ/GT size mismatch. Reading every image
fully is the only way to find truncated files; ``full=False`` reads headers only (fast, finds non-images).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import List, Optional, Sequence

from tqdm import tqdm

from varformer.data.catalog import Located, find_all
from varformer.data.demo_set import verify_demo
from varformer.data.image_io import header_problem, image_size, verify_image
from varformer.data.pairing import PairingResult, pair_files
from varformer.data.sidd import SiddBlocks
from varformer.errors import DataError
from varformer.files import read_json_or_none


@dataclass
class BenchmarkReport:
    name: str
    task: str
    folder: str
    layout: str
    pairs: int
    expected: Optional[int]
    method: str
    note: str = ""
    unpaired_lq: List[str] = field(default_factory=list)
    unpaired_gt: List[str] = field(default_factory=list)
    unreadable: List[str] = field(default_factory=list)
    size_mismatch: List[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.unpaired_lq or self.unpaired_gt or self.unreadable or self.size_mismatch) and self.pairs > 0


def _check_one(loc: Located, full: bool, progress: bool) -> BenchmarkReport:
    b = loc.benchmark
    if loc.layout == "sidd .mat":
        try:
            n = len(SiddBlocks(loc.lq_dir))
            return BenchmarkReport(b.name, b.task, loc.folder, loc.layout, n, b.expected, "sidd-blocks")
        except DataError as e:
            return BenchmarkReport(b.name, b.task, loc.folder, loc.layout, 0, b.expected, "sidd-blocks",
                                   unreadable=[str(e)])
    if b.kind == "clean":
        res = PairingResult([(f, f) for f in loc.lq], method="clean-images")
    else:
        res = pair_files(loc.lq, loc.gt, b.rules)
    rep = BenchmarkReport(b.name, b.task, loc.folder, loc.layout, len(res.pairs), b.expected, res.method, res.note,
                          res.unpaired_lq, res.unpaired_gt)
    files = sorted({os.path.join(loc.lq_dir, f) for f in loc.lq} | {os.path.join(loc.gt_dir, f) for f in loc.gt})
    bad = set()
    for path in tqdm(files, desc=f"check {b.name}", disable=not progress, leave=False):
        reason = header_problem(path) or (verify_image(path) if full else None)
        if reason:
            rep.unreadable.append(path)
            bad.add(path)
    if b.kind != "clean":
        for lq_rel, gt_rel in res.pairs:
            lq_p, gt_p = os.path.join(loc.lq_dir, lq_rel), os.path.join(loc.gt_dir, gt_rel)
            if lq_p in bad or gt_p in bad:
                continue
            (h, w), (H, W) = image_size(lq_p), image_size(gt_p)
            if (h, w) != (H, W) and not (b.size_policy == "center-crop-gt" and H >= h and W >= w):
                rep.size_mismatch.append(f"{lq_rel} ({w}x{h}) vs {gt_rel} ({W}x{H})")
    return rep




def check_root(root: str, names: Sequence[str] = (), full: bool = True, progress: bool = True) -> List[BenchmarkReport]:
    if not os.path.isdir(root):
        raise DataError(f"data root not found: {root}")
    reports: List[BenchmarkReport] = []
    seen_clean: dict = {}
    for loc in find_all(root, list(names) or None):
        if loc.benchmark.kind == "clean":  # one clean folder serves every noise level: check it once
            key = (loc.benchmark.name.rsplit("-s", 1)[0], loc.lq_dir)
            if key in seen_clean:
                seen_clean[key].name += f", {loc.benchmark.name}"
                continue
        rep = _check_one(loc, full, progress)
        if loc.benchmark.kind == "clean":
            seen_clean[key] = rep
        reports.append(rep)
    _note_demo_manifest(root, reports)
    return reports


def _note_demo_manifest(root: str, reports: List[BenchmarkReport]) -> None:
    """When ``root`` is a demo set's folder: the pair counts its manifest lists, and its checksum verdict, on every
    demo benchmark found (nothing is rebuilt here)."""
    if not os.path.isfile(os.path.join(root, "manifest.json")):
        return
    problem = verify_demo(root)
    manifest = read_json_or_none(os.path.join(root, "manifest.json"))
    listed = list(manifest.get("files", {})) if isinstance(manifest, dict) else []
    for rep in reports:
        if rep.name.startswith("demo-"):
            rep.expected = sum(f.startswith(f"test/{rep.task}/input/") for f in listed) or None
            rep.note = "demo set: checksums ok" if not problem else f"demo set: {problem} (it is rebuilt on next use)"
            if problem:
                rep.unreadable.append(f"demo manifest check: {problem}")


def format_reports(root: str, reports: Sequence[BenchmarkReport], limit: int = 0) -> str:
    """Human-readable report; ``limit`` > 0 caps each file list (0: list every file)."""
    if not reports:
        return (f"no known benchmark found under {root} (looked {6} folder levels deep; "
                f"'varformer data list' shows the layouts recognised)")
    lines = [f"benchmarks under {root}:"]
    for r in reports:
        exp = "?" if r.expected is None else str(r.expected)
        flag = "ok" if r.ok and (r.expected is None or r.expected == r.pairs) else "CHECK"
        lines.append(f"- {r.name} [{r.task}] {flag}: {r.pairs} pairs (expected {exp}), layout {r.layout}, "
                     f"paired by {r.method} - {r.folder}")
        if r.note:
            lines.append(f"    note: {r.note}")
        for label, items in (("unpaired input", r.unpaired_lq), ("unpaired ground truth", r.unpaired_gt),
                             ("unreadable", r.unreadable), ("size mismatch", r.size_mismatch)):
            shown = items if limit <= 0 else items[:limit]
            for item in shown:
                lines.append(f"    {label}: {item}")
            if len(items) > len(shown):
                lines.append(f"    ... {len(items) - len(shown)} more {label} files")
    return "\n".join(lines)
