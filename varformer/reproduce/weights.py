"""A method's released files for ``varformer reproduce paper``: fetched once, converted once (``MethodSpec.paper``).

    files = fetch_released(spec.paper, offline=False)   # {file name: local path}; one error naming every missing file
    conv = converted_checkpoint(spec, files)             # our model file, cached by the SHA-256 of the source file

Fetching goes through ``varformer.backbone.hub.resolve_weight_file`` (``checkpoints/`` folders first, then
``huggingface_hub.hf_hub_download`` into its cache: progress bars, resumable downloads, ``local_files_only``
offline). The conversion and the check of the backbone files against the converted model are the method's
(``PaperSpec.convert``, ``check_backbone``); the model file is written by ``varformer.checkpoints``.

Cache: ``$VARFORMER_CACHE`` else ``$XDG_CACHE_HOME/varformer`` else ``~/.cache/varformer``; the converted file is
``converted/<sha256 of the source>.safetensors`` beside a JSON record of the conversion and the backbone check.
The hash itself is remembered per (path, size, mtime), so a second run does not read the 7 GB source again. The
folder is marked as this program's cache (``varformer.files.MARKER_NAME``); a cached file that is cut short or
unreadable, or a record that is not valid JSON, is converted again (what is replaced is the cache's own file).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

from huggingface_hub import constants as hf_constants

from varformer.backbone.hub import checkpoint_dirs, resolve_weight_file
from varformer.checkpoints import save_model_file
from varformer.errors import CheckpointMismatchError, WeightsNotFoundError
from varformer.files import check_safetensors, claim_folder, folder_entries, mark_folder, write_text_atomic
from varformer.methods.api import MethodSpec, PaperSpec, ReleasedFile


def cache_root() -> Path:
    if os.environ.get("VARFORMER_CACHE"):
        return Path(os.environ["VARFORMER_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / __name__.split(".")[0]     # the package's own cache folder, named after the package


def _hf_cache() -> str:
    return str(hf_constants.HF_HUB_CACHE)  # huggingface_hub resolves HF_HOME / HF_HUB_CACHE at its import


def locate_released(paper: PaperSpec, checkpoints_dir: Optional[str] = None) -> Dict[str, Optional[Path]]:
    """Where each released file is here, without downloading anything (None: not here)."""
    found: Dict[str, Optional[Path]] = {}
    for f in paper.files:
        try:
            found[f.filename] = resolve_weight_file(f.filename, repo_id=f.repo_id, checkpoints_dir=checkpoints_dir,
                                                    local_files_only=True)
        except WeightsNotFoundError:
            found[f.filename] = None
    return found


def missing_message(paper: PaperSpec, missing: List[ReleasedFile], offline: bool,
                    checkpoints_dir: Optional[str]) -> str:
    """One message naming every missing file, where it was looked for and the commands that get it (into
    ``checkpoints_dir`` when one was given)."""
    dirs = ", ".join(str(d) for d in checkpoint_dirs(checkpoints_dir))
    target = checkpoints_dir or "checkpoints"
    by_repo: Dict[str, List[str]] = {}
    for f in missing:
        by_repo.setdefault(f.repo_id, []).append(f.filename)
    get = " and ".join(f"`hf download {repo} {' '.join(names)} --local-dir {target}`"
                       for repo, names in by_repo.items())
    how = ("run without --offline (and with network access) to fetch them into the Hugging Face cache, or "
           if offline else "")
    return (f"{len(missing)} of the {len(paper.files)} released files are missing: "
            + "; ".join(f"{f.filename} ({f.what}, Hugging Face {f.repo_id})" for f in missing)
            + f". Looked in {dirs} and the Hugging Face cache {_hf_cache()}"
            + (" (offline: no download tried)" if offline else "")
            + f". To get them: {how}{get} (`huggingface-cli download ...` with huggingface_hub < 1.0), "
              f"or put the files in {target}/.")


def fetch_released(paper: PaperSpec, offline: bool = False, checkpoints_dir: Optional[str] = None,
                   log: Optional[Callable[[str], None]] = print) -> Dict[str, Path]:
    """The released files as local paths: ``checkpoints/`` folders, else the Hugging Face cache, else a download
    (skipped when ``offline``). Every missing file is named in one ``WeightsNotFoundError``."""
    found: Dict[str, Path] = {}
    missing: List[ReleasedFile] = []
    for f in paper.files:
        try:
            found[f.filename] = resolve_weight_file(f.filename, repo_id=f.repo_id, checkpoints_dir=checkpoints_dir,
                                                    local_files_only=offline)
        except WeightsNotFoundError:
            missing.append(f)
    if missing:
        raise WeightsNotFoundError(missing_message(paper, missing, offline, checkpoints_dir))
    if log:
        for f in paper.files:
            log(f"{f.filename}: {found[f.filename]}")
    return found


# ---------------------------------------------------------------------------------------------------------------
def _memo_key(path: Path) -> Tuple[str, list]:
    real = os.path.realpath(path)
    st = os.stat(real)
    return real, [st.st_size, st.st_mtime_ns]


def _read_memo(memo_path: Optional[Path]) -> Dict[str, dict]:
    if memo_path is None or not memo_path.is_file():
        return {}
    try:
        return json.loads(memo_path.read_text())
    except ValueError:
        return {}


def remembered_sha256(path: Path, memo_path: Path) -> Optional[str]:
    """The hash remembered for the file as it is now (same size and mtime), or None; reads nothing else."""
    key, stamp = _memo_key(path)
    entry = _read_memo(memo_path).get(key, {})
    return entry.get("sha256") if entry.get("stamp") == stamp else None


def file_sha256(path: Path, memo_path: Optional[Path] = None) -> str:
    """SHA-256 of a file, remembered in ``memo_path`` (JSON) per (real path, size, mtime)."""
    key, stamp = _memo_key(path)
    memo = _read_memo(memo_path)
    if memo.get(key, {}).get("stamp") == stamp:
        return memo[key]["sha256"]
    h = hashlib.sha256()
    with open(key, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 24), b""):
            h.update(block)
    digest = h.hexdigest()
    if memo_path is not None:
        memo[key] = {"stamp": stamp, "sha256": digest}
        memo_path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(memo_path, json.dumps(memo, indent=1))
    return digest


CACHE_KIND = "converted weights cache"     # the cache folder's marker (varformer.files.mark_folder)
_CACHE_ENTRY = re.compile(r"^([0-9a-f]{64}\.(safetensors|json)|hashes\.json|\..*\.tmp)$")


def _cache_entries_only(folder: str) -> bool:
    """An unmarked folder holding only what an earlier version cached there."""
    return all(_CACHE_ENTRY.match(n) for n in folder_entries(folder))


def open_cache_folder(folder: Path) -> None:
    """The conversion cache, checked and marked before anything is written into it: a new or empty folder, a
    marked cache or an earlier version's; a folder of the user's is refused in one line."""
    claim_folder(folder, CACHE_KIND, "the converted-weights cache (--cache-dir)", recognized=_cache_entries_only)
    mark_folder(folder, CACHE_KIND)


def cached_record(out: Path, record_path: Path, digest: str) -> Tuple[Optional[dict], Optional[str]]:
    """(the record, None) if the cached conversion of ``digest`` can be used; else (None, why not: absent, a
    file of the pair missing, a record that is not JSON or not this file's, a model file cut short). The caller
    converts again over the cache's own files."""
    if not out.exists() and not record_path.exists():
        return None, None
    if not out.is_file() or not record_path.is_file():
        return None, "incomplete (a file of the pair is missing)"
    try:
        record = json.loads(record_path.read_text())
    except (OSError, ValueError) as e:
        return None, f"its record {record_path.name} is not valid JSON ({type(e).__name__})"
    if not isinstance(record, dict) or record.get("sha256") != digest:
        return None, f"its record {record_path.name} is not this file's"
    try:
        check_safetensors(out)
    except CheckpointMismatchError as e:
        return None, str(e)
    return record, None


@dataclass
class Converted:
    path: Path               # our model file (.safetensors)
    sha256: str              # of the release's source file
    converted_now: bool      # False: taken from the cache
    record: dict             # what the conversion and the backbone check found (also in <sha256>.json)


def conversion_folder(cache_dir: Optional[Path] = None) -> Path:
    return Path(cache_dir) if cache_dir is not None else cache_root() / "converted"


def converted_checkpoint(spec: MethodSpec, files: Dict[str, Path], cache_dir: Optional[Path] = None,
                         log: Optional[Callable[[str], None]] = print) -> Converted:
    """The release's source file converted into the method's model file once:
    ``<cache>/<sha256>.safetensors``."""
    paper = spec.paper
    folder = conversion_folder(cache_dir)
    open_cache_folder(folder)
    source = files[paper.source]
    digest = file_sha256(source, folder / "hashes.json")
    out, record_path = folder / f"{digest}.safetensors", folder / f"{digest}.json"
    record, problem = cached_record(out, record_path, digest)
    if record is not None:
        if log:
            log(f"converted model file (cached, sha256 {digest[:12]}): {out}")
        return Converted(out, digest, False, record)
    if log and problem:
        log(f"the cached conversion {out} is unusable ({problem}): converting again")
    if log:
        log(f"converting {source} (sha256 {digest[:12]}) into {out} ...")
    model, summary = paper.convert(files)
    record = {"method": spec.name, "source": str(source), "sha256": digest,
              "settings": model.settings().to_metadata(), "conversion": summary,
              "backbone": paper.check_backbone(model, files)}
    save_model_file(out, spec.name, record["settings"], model.state_dict())     # atomic
    write_text_atomic(record_path, json.dumps(record, indent=1))
    if log:
        log(summary)
        log(f"wrote {out}")
    return Converted(out, digest, True, record)
