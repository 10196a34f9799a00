"""Matching degraded (LQ) files to their ground truth (GT) by the dataset's own naming rule.

Rules (a benchmark lists the ones that apply; they are tried in order and the first that pairs every LQ file
wins, else the one that pairs most):
- ``stem``: same file stem in both folders (Rain13K test sets, GoPro flattened, LOL, HIDE, ...); the extension
  may differ (``.jpg`` input, ``.png`` target);
- ``rain-norain``: ``rain-12.png`` / ``rainy-12`` <-> ``norain-12.png`` (AirNet/PromptIR Rain100L train, the
  original Rain100H/L release);
- ``haze-prefix``: hazy ``0001_0.8_0.2.jpg`` <-> clear ``0001.png`` (RESIDE OTS/SOTS: the text before the first
  ``_``); several hazy images may share one clear image;
- ``sequence-frame``: per-sequence folders, ``GOPR0384_11_00/blur/000001.png`` <-> ``.../sharp/000001.png``
  (key ``sequence/frame``: the folder between them is ignored);
- ``sr-suffix``: super-resolution pairs named by their resolution, ``Canon_001_LR4.png`` <-> ``Canon_001_HR.png``
  (RealSR), ``0801x4.png`` <-> ``0801.png`` (DIV2K): a trailing ``_LR<n>``/``_HR``/``_lq``/``_gt`` or ``x<n>`` is
  dropped from the stem.

Listing-order pairing (what Restormer's MATLAB evaluator and VarFormer's/DiffUIR's loaders do silently) is used
only when no name matches at all and the two lists have the same length; the result says so, so callers report it.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Sequence, Tuple

RULES = ("stem", "rain-norain", "haze-prefix", "sequence-frame", "sr-suffix")


def _stem(path: str) -> str:
    return os.path.splitext(path)[0]


_RAIN_PREFIX = re.compile(r"^(no)?rain(y)?[-_]?", re.IGNORECASE)
_SR_SUFFIX = re.compile(r"([-_](lr|hr|lq|gt)\d*|x\d)$", re.IGNORECASE)


def _key_functions(rule: str) -> Tuple[Callable[[str], str], Callable[[str], str]]:
    """(LQ key, GT key) for a relative path under the LQ / GT folder."""
    if rule == "stem":
        return _stem, _stem
    if rule == "sequence-frame":
        def seq_key(p: str) -> str:  # "<seq>/blur/000001.png" -> "<seq>/000001"
            parts = _stem(p).replace(os.sep, "/").split("/")
            return "/".join([parts[0], parts[-1]]) if len(parts) >= 3 else "/".join(parts)
        return seq_key, seq_key
    if rule == "rain-norain":
        def key(p: str) -> str:
            d, b = os.path.split(_stem(p))
            return os.path.join(d, _RAIN_PREFIX.sub("", b))
        return key, key
    if rule == "sr-suffix":
        def sr_key(p: str) -> str:
            return _SR_SUFFIX.sub("", _stem(p))
        return sr_key, sr_key
    if rule == "haze-prefix":
        def lq_key(p: str) -> str:
            d, b = os.path.split(_stem(p))
            return os.path.join(d, b.split("_")[0])
        return lq_key, _stem
    raise ValueError(f"unknown pairing rule '{rule}' (known: {', '.join(RULES)})")


@dataclass
class PairingResult:
    pairs: List[Tuple[str, str]]               # (LQ relative path, GT relative path), sorted by LQ
    unpaired_lq: List[str] = field(default_factory=list)
    unpaired_gt: List[str] = field(default_factory=list)
    method: str = "stem"                       # the rule used, or "listing-order"
    note: str = ""                             # set when listing-order pairing was used

    @property
    def complete(self) -> bool:
        return not self.unpaired_lq and not self.unpaired_gt


def _pair_with(rule: str, lq: Sequence[str], gt: Sequence[str]) -> PairingResult:
    lq_key, gt_key = _key_functions(rule)
    gt_by_key: Dict[str, str] = {}
    for g in gt:
        gt_by_key.setdefault(gt_key(g), g)
    pairs, unpaired_lq, used = [], [], set()
    for p in lq:
        g = gt_by_key.get(lq_key(p))
        if g is None:
            # tolerate case differences of the extension-less key (e.g. ``.PNG`` copies renamed on Windows)
            g = gt_by_key.get(lq_key(p).lower()) if lq_key(p) != lq_key(p).lower() else None
        if g is None:
            unpaired_lq.append(p)
        else:
            pairs.append((p, g))
            used.add(g)
    unpaired_gt = [g for g in gt if g not in used]
    return PairingResult(pairs, unpaired_lq, unpaired_gt, method=rule)


def pair_files(lq: Sequence[str], gt: Sequence[str], rules: Sequence[str] = ("stem",)) -> PairingResult:
    """Pair relative paths by the first rule that pairs every LQ file (else the best); see the module doc."""
    lq, gt = sorted(lq), sorted(gt)
    best = None
    for rule in rules:
        res = _pair_with(rule, lq, gt)
        if lq and not res.unpaired_lq:
            return res
        if best is None or len(res.pairs) > len(best.pairs):
            best = res
    if best is None:
        best = PairingResult([], list(lq), list(gt))
    if not best.pairs and lq and len(lq) == len(gt):
        return PairingResult(list(zip(lq, gt)), [], [], method="listing-order",
                             note=f"no file names match between input and ground truth; paired {len(lq)} files "
                                  f"by sorted listing order (counts agree) - check that this is intended")
    return best


def describe_unpaired(res: PairingResult, limit: int = 10) -> str:
    parts = []
    for label, items in (("input files without ground truth", res.unpaired_lq),
                         ("ground-truth files without input", res.unpaired_gt)):
        if items:
            shown = ", ".join(items[:limit]) + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")
            parts.append(f"{len(items)} {label}: {shown}")
    return "; ".join(parts)
