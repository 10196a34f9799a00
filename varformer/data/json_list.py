"""The authors' JSON lists as a data source: RestoreVAR's ``test_jsons/*.json``, ``trainset.json``, ``valset.json``.

A list is a JSON array of objects, one per pair, as the RestoreVAR release writes them (its
``utils/restoration_loader.py`` reads these four keys)::

    [{"image_path": "data/Haze/RESIDE/Test/hazy/0001_0.8_0.2.jpg",   # the degraded image
      "target_path": "data/Haze/RESIDE/Test/GT/0001.jpg",          # its ground truth
      "degradation": "Haze",                                       # one of DEGRADATIONS (the release's KeyError)
      "dataset": "RESIDE"}, ...]

Relative paths are relative to ``root``: the folder the authors' scripts run in, the one holding their ``data/``.
Order is kept: the release scores the first 5,001 entries of each test list in file order (``cap``; the
``restorevar`` evaluation preset applies it). ``list_datasets`` makes one dataset per ``dataset`` value, in order
of first appearance, named by it (``dataset_key``: ``RESIDE`` -> ``reside``); each yields
``{"lq", "gt", "name", "file"}`` like ``varformer.data.benchmark_data`` (``file``: the name the release saves the
result under, with its extension; ``name`` without it).
"""
from __future__ import annotations

import json
import os
import re
from collections import Counter
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from torch.utils.data import Dataset

from varformer.data.catalog import Benchmark, Located, normalise
from varformer.data.image_io import read_image, to_tensor
from varformer.data.pairing import PairingResult
from varformer.errors import DataError

# the release's degradation labels -> our task names (RestoreVAR utils/restoration_loader.py accepts only these)
DEGRADATIONS: Dict[str, str] = {"Haze": "haze", "Rain": "rain", "Snow": "snow", "Low-light": "lowlight",
                                "Motion blur": "blur", "Mixed": "mixed", "toled": "udc", "poled": "udc"}
KEYS = ("image_path", "target_path", "degradation", "dataset")
# sets whose results the release saves as "<folder>_<file>" (frame names repeat across videos): infer.py
_PREFIXED_BY_FOLDER = {"revide": "parent", "gopro": "sequence"}
_GOPRO_SEQUENCE = re.compile(r"^GOPR\d+", re.IGNORECASE)


@dataclass(frozen=True)
class ListEntry:
    image_path: str
    target_path: str
    degradation: str
    dataset: str
    index: int                      # position in the file (0-based)

    @property
    def task(self) -> str:
        return DEGRADATIONS[self.degradation]


def read_list(path: str) -> List[ListEntry]:
    """Every entry of a list file, in file order; ``DataError`` naming the file and the first bad entry."""
    try:
        with open(path) as fh:
            data = json.load(fh)
    except FileNotFoundError:
        raise DataError(f"list file not found: {path}") from None
    except json.JSONDecodeError as e:
        raise DataError(f"list file {path} is not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    if not isinstance(data, list):
        raise DataError(f"list file {path}: expected a JSON array of {{{', '.join(KEYS)}}} objects, "
                        f"got a {type(data).__name__}")
    entries = []
    for i, item in enumerate(data):
        if not isinstance(item, dict) or any(not isinstance(item.get(k), str) for k in KEYS):
            raise DataError(f"list file {path}, entry {i}: expected an object with the string keys "
                            f"{', '.join(KEYS)}, got {str(item)[:120]}")
        if item["degradation"] not in DEGRADATIONS:
            raise DataError(f"list file {path}, entry {i}: unknown degradation {item['degradation']!r} (the release "
                            f"accepts {', '.join(DEGRADATIONS)})")
        entries.append(ListEntry(item["image_path"], item["target_path"], item["degradation"], item["dataset"], i))
    if not entries:
        raise DataError(f"list file {path} holds no entries")
    return entries


def resolve(path: str, root: Optional[str]) -> str:
    path = path.replace("\\", "/")
    return path if os.path.isabs(path) or root is None else os.path.join(root, path)


def saved_name(entry: ListEntry) -> str:
    """The file name the release saves this entry's result under (infer.py): the degraded image's base name;
    REVIDE ``<video folder>_<file>``, GoPro ``<sequence>_<file>``."""
    parts = [p for p in entry.image_path.replace("\\", "/").split("/") if p]
    rule = _PREFIXED_BY_FOLDER.get(entry.dataset.lower())
    if rule == "parent" and len(parts) >= 2:
        return f"{parts[-2]}_{parts[-1]}"
    if rule == "sequence":
        seq = [p for p in parts[:-1] if _GOPRO_SEQUENCE.match(p)]
        if seq:
            return f"{seq[-1]}_{parts[-1]}"
    return parts[-1]


def dataset_key(dataset: str) -> str:
    """The benchmark name of a list's ``dataset`` value in our tables: lower case without spaces, ``_`` or ``-``
    (``LOL-Blur`` -> ``lolblur``, ``Snow100k`` -> ``snow100k``)."""
    return normalise(dataset)


class ListDataset(Dataset):
    """The entries of one ``dataset`` value of a list. ``allow_size_mismatch``: LQ and GT may differ in size (a
    protocol that resizes both, as the release does, makes them equal); otherwise a mismatch is an error."""

    def __init__(self, list_path: str, root: Optional[str], entries: Sequence[ListEntry], notes: Sequence[str] = (),
                 allow_size_mismatch: bool = False):
        first = entries[0]
        name = dataset_key(first.dataset)
        tasks = Counter(e.task for e in entries)
        self.entries = list(entries)
        self.root = root
        self.allow_size_mismatch = allow_size_mismatch
        self.benchmark = Benchmark(name, tasks.most_common(1)[0][0], "list", (), expected=len(entries),
                                   layout=f"entries of {list_path} with dataset {first.dataset!r}")
        self.located = Located(self.benchmark, os.path.abspath(list_path), "json-list")
        self.pairing = PairingResult([(e.image_path, e.target_path) for e in entries], method="json-list")
        self.notes: List[str] = list(notes)
        if len(tasks) > 1:
            self.notes.append(f"{first.dataset}: entries of several degradations "
                              f"({', '.join(f'{t} {n}' for t, n in tasks.items())}); reported under the commonest")
        self.files = [saved_name(e) for e in entries]
        repeated = sum(n - 1 for n in Counter(self.files).values() if n > 1)
        if repeated:
            self.notes.append(f"{first.dataset}: {repeated} entries share a saved file name with an earlier one (the "
                              f"release's saved results keep only the last of each)")

    def __len__(self) -> int:
        return len(self.entries)

    def names(self) -> List[str]:
        return [os.path.splitext(f)[0] for f in self.files]

    def load_pair(self, index: int):
        e = self.entries[index]
        lq_path, gt_path = resolve(e.image_path, self.root), resolve(e.target_path, self.root)
        lq, _ = read_image(lq_path)
        gt, _ = read_image(gt_path)
        if lq.shape != gt.shape and not self.allow_size_mismatch:
            raise DataError(f"{self.benchmark.name}: size mismatch between {lq_path} ({lq.shape[1]}x{lq.shape[0]}) "
                            f"and {gt_path} ({gt.shape[1]}x{gt.shape[0]}); only a protocol that resizes both "
                            f"can score this list")
        return lq, gt

    def __getitem__(self, index: int) -> Dict[str, object]:
        lq, gt = self.load_pair(index)
        return {"lq": to_tensor(lq), "gt": to_tensor(gt), "name": os.path.splitext(self.files[index])[0],
                "file": self.files[index]}


def check_files(entries: Sequence[ListEntry], root: Optional[str], list_path: str, limit: int = 5) -> None:
    """``DataError`` naming the missing files (the first ``limit``) before anything is read."""
    missing = [p for e in entries for p in (resolve(e.image_path, root), resolve(e.target_path, root))
               if not os.path.isfile(p)]
    if missing:
        shown = ", ".join(missing[:limit]) + (f", ... ({len(missing) - limit} more)" if len(missing) > limit else "")
        where = f"under --root {root}" if root else "relative to the current folder (no --root given)"
        raise DataError(f"list {list_path}: {len(missing)} of {2 * len(entries)} files not found {where}: {shown}. "
                        f"Relative paths are resolved against the folder the authors' scripts run in (it holds "
                        f"their data/)")


def list_datasets(list_path: str, root: Optional[str] = None, *, cap: Optional[int] = None,
                  allow_size_mismatch: bool = False) -> List[ListDataset]:
    """One dataset per ``dataset`` value of the list, after keeping its first ``cap`` entries (the release's rule
    is per list file, in file order); every file is checked to exist first."""
    entries = read_list(list_path)
    notes = []
    if cap is not None and len(entries) > cap:
        notes.append(f"first {cap:,} of the {len(entries):,} entries of {os.path.basename(list_path)} scored "
                     f"(the release's cap per test list)")
        entries = entries[:cap]
    check_files(entries, root, list_path)
    groups: Dict[str, List[ListEntry]] = {}
    for e in entries:
        groups.setdefault(dataset_key(e.dataset), []).append(e)
    return [ListDataset(list_path, root, g, notes, allow_size_mismatch) for g in groups.values()]


def describe_list(list_path: str, root: Optional[str] = None, limit: int = 5) -> Tuple[List[str], int]:
    """(report lines, missing file count) for ``varformer data check FILE.json``: entries per dataset and
    degradation, the missing files."""
    entries = read_list(list_path)
    lines = [f"{list_path}: {len(entries):,} entries"]
    per_set: Dict[str, Counter] = {}
    for e in entries:
        per_set.setdefault(e.dataset, Counter())[e.degradation] += 1
    for dataset, degs in per_set.items():
        lines.append(f"- {dataset} (benchmark {dataset_key(dataset)}): {sum(degs.values()):,} entries, "
                     + ", ".join(f"{d} {n:,}" for d, n in degs.items()))
    missing = [p for e in entries for p in (resolve(e.image_path, root), resolve(e.target_path, root))
               if not os.path.isfile(p)]
    where = f"under {root}" if root else "relative to the current folder (pass --root)"
    lines.append(f"files: {2 * len(entries) - len(missing):,} of {2 * len(entries):,} found {where}")
    lines += [f"    missing: {p}" for p in missing[:limit]]
    if len(missing) > limit:
        lines.append(f"    ... {len(missing) - limit} more missing")
    return lines, len(missing)
