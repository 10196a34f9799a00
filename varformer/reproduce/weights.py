"""The released weights for ``varformer reproduce paper``: fetched once, converted once.

    files = fetch_paper_weights(offline=False)      # {file name: local path}; one error naming every missing file
    conv = converted_checkpoint(files)               # our .safetensors, cached by the SHA-256 of net_g_last.pth

Fetching goes through ``varformer.backbone.hub.resolve_weight_file`` (``checkpoints/`` folders first, then
``huggingface_hub.hf_hub_download`` into its cache: progress bars, resumable downloads, ``local_files_only``
offline). The official test script loads the VQVAE and VAR files and then the checkpoint over them; the released
checkpoint holds every tensor (the VQVAE and VAR included), and our strict conversion takes them all from it, so
the two backbone files are checked against the checkpoint instead (their architecture read from their tensors):
the frozen parts must be equal, the VAR embeddings and head may differ (the official recipe trains them).

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

import torch
from huggingface_hub import constants as hf_constants

from varformer.backbone.hub import (VAE_FILENAME, VAR_REPO_ID, checkpoint_dirs, load_vae, load_var,
                                    read_state_dict, resolve_weight_file, var_filename)
from varformer.errors import CheckpointMismatchError, WeightsNotFoundError
from varformer.files import check_safetensors, claim_folder, folder_entries, mark_folder, write_text_atomic
from varformer.model import VarFormerSettings, save_varformer
from varformer.model.files import build_from_state_dict, convert_official
from varformer.model.convert import read_official

VARFORMER_REPO_ID = "wsy541/VarFormer"
OFFICIAL_FILENAME = "net_g_last.pth"


@dataclass(frozen=True)
class WeightFile:
    repo_id: str
    filename: str
    what: str


PAPER_FILES = (WeightFile(VAR_REPO_ID, VAE_FILENAME, "VAR's VQVAE tokenizer"),
               WeightFile(VAR_REPO_ID, var_filename(16), "VAR transformer, depth 16"),
               WeightFile(VARFORMER_REPO_ID, OFFICIAL_FILENAME, "released VarFormer (BasicSR checkpoint)"))


def cache_root() -> Path:
    if os.environ.get("VARFORMER_CACHE"):
        return Path(os.environ["VARFORMER_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "varformer"


def _hf_cache() -> str:
    return str(hf_constants.HF_HUB_CACHE)  # huggingface_hub resolves HF_HOME / HF_HUB_CACHE at its import


def fetch_paper_weights(offline: bool = False, checkpoints_dir: Optional[str] = None,
                        log: Optional[Callable[[str], None]] = print) -> Dict[str, Path]:
    """The three released files as local paths: ``checkpoints/`` folders, else the Hugging Face cache, else a
    download (skipped when ``offline``). Every missing file is named in one ``WeightsNotFoundError``."""
    found: Dict[str, Path] = {}
    missing: List[Tuple[WeightFile, str]] = []
    for f in PAPER_FILES:
        try:
            found[f.filename] = resolve_weight_file(f.filename, repo_id=f.repo_id, checkpoints_dir=checkpoints_dir,
                                                    local_files_only=offline)
        except WeightsNotFoundError as e:
            missing.append((f, str(e)))
    if missing:
        dirs = ", ".join(str(d) for d in checkpoint_dirs(checkpoints_dir))
        by_repo: Dict[str, List[str]] = {}
        for f, _ in missing:
            by_repo.setdefault(f.repo_id, []).append(f.filename)
        get = " and ".join(f"`hf download {repo} {' '.join(names)} --local-dir checkpoints`"
                           for repo, names in by_repo.items())
        how = ("run without --offline (and with network access) to fetch them into the Hugging Face cache, or "
               if offline else "")
        raise WeightsNotFoundError(
            f"{len(missing)} of the {len(PAPER_FILES)} released files are missing: "
            + "; ".join(f"{f.filename} ({f.what}, Hugging Face {f.repo_id})" for f, _ in missing)
            + f". Looked in {dirs} and the Hugging Face cache {_hf_cache()}"
            + (" (offline: no download tried)" if offline else "")
            + f". To get them: {how}{get} (`huggingface-cli download ...` with huggingface_hub < 1.0), "
              "or put the files in checkpoints/.")
    if log:
        for f in PAPER_FILES:
            log(f"{f.filename}: {found[f.filename]}")
    return found


# ---------------------------------------------------------------------------------------------------------------
def file_sha256(path: Path, memo_path: Optional[Path] = None) -> str:
    """SHA-256 of a file, remembered in ``memo_path`` (JSON) per (real path, size, mtime)."""
    real = os.path.realpath(path)
    st = os.stat(real)
    key, stamp = real, [st.st_size, st.st_mtime_ns]
    memo: Dict[str, dict] = {}
    if memo_path is not None and memo_path.is_file():
        try:
            memo = json.loads(memo_path.read_text())
        except ValueError:
            memo = {}
        if memo.get(key, {}).get("stamp") == stamp:
            return memo[key]["sha256"]
    h = hashlib.sha256()
    with open(real, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 24), b""):
            h.update(block)
    digest = h.hexdigest()
    if memo_path is not None:
        memo[key] = {"stamp": stamp, "sha256": digest}
        _atomic_write(memo_path, json.dumps(memo, indent=1))
    return digest


def _atomic_write(path: Path, text: str) -> None:
    write_text_atomic(path, text)


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
    path: Path               # our checkpoint (.safetensors)
    sha256: str              # of the official source file
    converted_now: bool      # False: taken from the cache
    record: dict             # what the conversion and the backbone check found (also in <sha256>.json)


def converted_checkpoint(files: Dict[str, Path], cache_dir: Optional[Path] = None,
                         log: Optional[Callable[[str], None]] = print) -> Converted:
    """``net_g_last.pth`` converted into our format once: ``<cache>/converted/<sha256>.safetensors``."""
    folder = Path(cache_dir) if cache_dir is not None else cache_root() / "converted"
    open_cache_folder(folder)
    source = files[OFFICIAL_FILENAME]
    digest = file_sha256(source, folder / "hashes.json")
    out, record_path = folder / f"{digest}.safetensors", folder / f"{digest}.json"
    record, problem = cached_record(out, record_path, digest)
    if record is not None:
        if log:
            log(f"converted checkpoint (cached, sha256 {digest[:12]}): {out}")
        return Converted(out, digest, False, record)
    if log and problem:
        log(f"the cached conversion {out} is unusable ({problem}): converting again")
    if log:
        log(f"converting {source} (sha256 {digest[:12]}) into {out} ...")
    arch, state_dict, report = convert_official(read_official(str(source)), with_report=True)
    model = build_from_state_dict(VarFormerSettings(**arch), state_dict, source=str(source))
    record = {"source": str(source), "sha256": digest, "settings": model.settings().to_metadata(),
              "conversion": report.summary(), "backbone": check_backbone(model, files)}
    save_varformer(out, model)  # through a temporary (varformer.files)
    _atomic_write(record_path, json.dumps(record, indent=1))
    if log:
        log(report.summary())
        log(f"wrote {out}")
    return Converted(out, digest, True, record)


def _count_blocks(sd: Dict[str, torch.Tensor]) -> int:
    return len({m.group(1) for k in sd for m in [re.match(r"blocks\.(\d+)\.", k)] if m})


def check_backbone(model: torch.nn.Module, files: Dict[str, Path]) -> Dict[str, object]:
    """Compare the checkpoint's VQVAE and VAR with the released backbone files (their width and depth read from
    their tensors): the frozen parts are expected equal, the VAR embeddings/head may be fine-tuned."""
    vae_sd = read_state_dict(files[VAE_FILENAME])
    var_file = files[var_filename(16)]
    var_sd = read_state_dict(var_file)
    width = int(vae_sd["encoder.conv_in.weight"].shape[0]) if "encoder.conv_in.weight" in vae_sd else None
    depth = _count_blocks(var_sd)
    if width is None or not depth:
        raise CheckpointMismatchError(f"{files[VAE_FILENAME]} / {var_file}: not a VQVAE and a VAR file")
    vae = load_vae(files[VAE_FILENAME], ch=width)       # strict: a real VQVAE of that width
    var = load_var(depth, var_file, vae=vae)            # strict: a real VAR of that depth
    ours = model.state_dict()
    result: Dict[str, object] = {"vae_ch": width, "var_depth": depth,
                                 "checkpoint_vae_ch": model.vae_ch, "checkpoint_depth": model.depth}
    if (width, depth) != (model.vae_ch, model.depth):
        result["note"] = (f"the backbone files are VQVAE ch={width} / VAR depth {depth}, the checkpoint "
                          f"ch={model.vae_ch} / depth {model.depth}: not compared")
        return result
    groups = {"vqvae": ("vae.", vae.state_dict()),
              "var_blocks": ("var.", {k: v for k, v in var.state_dict().items() if k.startswith("blocks.")}),
              "var_embeddings_head": ("var.", {k: v for k, v in var.state_dict().items()
                                               if not k.startswith("blocks.")})}
    for name, (prefix, sd) in groups.items():
        differ = [k for k, v in sd.items() if not torch.equal(ours[prefix + k], v)]
        result[name] = {"tensors": len(sd), "differ": len(differ), "first_differing": differ[:3]}
    return result


def describe_backbone_check(check: Dict[str, object]) -> str:
    if "note" in check:
        return check["note"]
    parts = []
    for name, label in (("vqvae", "VQVAE"), ("var_blocks", "VAR blocks"), ("var_embeddings_head",
                                                                           "VAR embeddings/head")):
        c = check[name]
        parts.append(f"{label}: {c['tensors'] - c['differ']}/{c['tensors']} tensors equal to the released file")
    return "; ".join(parts) + " (the official recipe fine-tunes the VAR embeddings and head)"
