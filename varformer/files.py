"""Every file the package writes or reads as weights goes through here: one atomic write, one safe reader.

    with atomic_output("out/model.safetensors") as tmp:   # write to ``tmp`` (same folder), renamed on success
        save_file(tensors, tmp)
    write_text_atomic("run/config.yaml", text)
    save_torch_atomic(obj, "run/ckpt_00001000.pt")          # flushed to disk before the rename
    obj = read_torch_file(path)                               # weights_only=True, memory-mapped, one-line errors
    tensors, meta = read_safetensors(path)                    # one allocation per tensor, no memory map

A write never leaves a half file under the final name: the temporary (``.NAME.PID.tmp`` beside it) is renamed
over the target only once complete, and removed if the write fails. A read never unpickles code: torch files are
read with ``weights_only=True``; anything else (truncated, random bytes, a pickle with code) is one
``CheckpointMismatchError`` line naming the file.

What the program may replace or remove (docs/safety.md): a folder it made carries a marker file (``MARKER_NAME``,
naming the program and what the folder is: a training run, the demo set, evaluation results, a cache), and only a
folder with the marker of its kind ever has content removed (``remove_owned``); a non-empty folder without one is
the user's and is refused as an output or cache in one line (``claim_folder``). An output file is checked before
any work (``check_output_file``): never one of the inputs, an existing file replaced only when asked. A lock is
created with its owner already inside (``create_exclusive``).
"""
from __future__ import annotations

import contextlib
import json
import os
import pickle
import shutil
import warnings
import zipfile
from pathlib import Path
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import torch

from varformer.errors import CheckpointMismatchError, OutputError

TMP_SUFFIX = ".tmp"


def temporary_name(path: str | os.PathLike) -> Path:
    """The temporary a write of ``path`` goes through: hidden, beside it (same file system: the rename is
    atomic), tagged with the writer's PID (an interrupted write of a dead process is recognisable)."""
    p = Path(path)
    return p.with_name(f".{p.name}.{os.getpid()}{TMP_SUFFIX}")


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, fsync: bool = False) -> Iterator[str]:
    """Yield a temporary path to write ``path``'s content to; on success it is renamed onto ``path`` (replacing
    what is there), on failure removed. ``fsync``: flush the file to disk before the rename (checkpoints)."""
    target = Path(path)
    make_folder(target.parent)
    tmp = temporary_name(target)
    try:
        yield str(tmp)
        if fsync:
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_output(path) as tmp, open(tmp, "wb") as fh:
        fh.write(data)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """UTF-8, line endings as given (``newline=""``: CSV rows keep their ``\\r\\n``)."""
    with atomic_output(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as fh:
        fh.write(text)


def save_torch_atomic(obj, path: str | os.PathLike, fsync: bool = False) -> None:
    """``torch.save`` through a temporary; what is saved must load with ``weights_only=True``."""
    with atomic_output(path, fsync=fsync) as tmp, open(tmp, "wb") as fh:
        torch.save(obj, fh)


def save_safetensors_atomic(tensors: Dict[str, torch.Tensor], path: str | os.PathLike,
                            metadata: Optional[Dict[str, str]] = None) -> None:
    # imported here: safetensors is only needed by the commands that write model files (start-up time)
    from safetensors.torch import save_file
    contiguous = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    with atomic_output(path) as tmp:
        save_file(contiguous, tmp, metadata=metadata)


# ---------------------------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------------------------
def _unpickler_reason(exc: Exception) -> str:
    """The one informative line of torch's weights-only refusal ("Unsupported global: GLOBAL numpy...", "Trying to
    load unsupported GLOBAL posix.system ..."), without torch's paragraphs about its defaults."""
    text = str(exc)
    if "WeightsUnpickler error:" in text:
        reason = text.split("WeightsUnpickler error:", 1)[-1].strip().split("\n")[0]
        return reason.split(" was not an allowed global")[0] or "no message"
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    useful = [ln for ln in lines if not ln.startswith(("Weights only load failed", "Check the documentation",
                                                        "Please file an issue"))]
    return (useful or lines or ["no message"])[0]


def read_torch_file(path: str | os.PathLike, map_location: str | torch.device = "cpu", mmap: bool = True):
    """``torch.load(weights_only=True)`` of any weights file (memory-mapped when the format allows: tensors are
    read only when used), every failure one ``CheckpointMismatchError`` line: a truncated file, random bytes, a
    pickle holding more than tensors and plain containers (which could run code, so it is never unpickled)."""
    with open(path, "rb") as fh:
        head = fh.read(4)
    is_zip = zipfile.is_zipfile(path)
    if not is_zip and head.startswith(b"PK"):
        raise CheckpointMismatchError(f"{path} cannot be read as a torch checkpoint: it is truncated (it starts "
                                      f"like one but its end is missing: a partial download or copy, or an "
                                      f"interrupted write?)")
    if not is_zip and not head.startswith(b"\x80"):
        raise CheckpointMismatchError(f"{path} is not a torch checkpoint (neither the zip format torch.save "
                                      f"writes nor its legacy pickle format)")
    try:
        with warnings.catch_warnings():
            # torch's note on a legacy file's pickle protocol: the outcome (loaded, or refused below) says enough
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            # os.fspath: before torch 2.3, mmap=True takes a str filename only
            return torch.load(os.fspath(path), map_location=map_location, weights_only=True, mmap=mmap and is_zip)
    except pickle.UnpicklingError as exc:
        raise CheckpointMismatchError(
            f"{path} holds objects that torch.load(weights_only=True) refuses to unpickle ({_unpickler_reason(exc)}): "
            f"files may carry code, so only tensors and plain containers are read") from None
    except (RuntimeError, EOFError, OSError, ValueError, IndexError, KeyError) as exc:
        first = str(exc).split(". ")[0].splitlines()[0] if str(exc) else "no message"
        raise CheckpointMismatchError(f"{path} cannot be read as a torch checkpoint: truncated or corrupt "
                                      f"({type(exc).__name__}: {first})") from None


def read_json_or_none(path: str | os.PathLike) -> Optional[object]:
    """A JSON file's content, or None when it is missing or unreadable (for files that only say what a folder is:
    a missing or broken one means "not ours" or "not built", never an error)."""
    try:
        with open(path) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def read_state_dict(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Dict[str, torch.Tensor]:
    """A plain state dict of tensors from a torch file (memory-mapped when the file format allows it)."""
    sd = read_torch_file(path, map_location)
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointMismatchError(f"{path} is not a plain state dict of tensors")
    return sd


_SAFETENSORS_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
                       "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
                       "U8": torch.uint8, "BOOL": torch.bool}


def _safetensors_header(path: str | os.PathLike, fh) -> Tuple[dict, int]:
    size = os.path.getsize(path)
    raw = fh.read(8)
    n = int.from_bytes(raw, "little") if len(raw) == 8 else -1
    if n <= 0 or 8 + n > size:
        raise CheckpointMismatchError(f"{path} cannot be read as a .safetensors file (no valid header: truncated "
                                      "or not a safetensors file)")
    try:
        header = json.loads(fh.read(n))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointMismatchError(f"{path} cannot be read as a .safetensors file (corrupt header: {e})") from None
    if not isinstance(header, dict):
        raise CheckpointMismatchError(f"{path} cannot be read as a .safetensors file (corrupt header)")
    return header, 8 + n


def safetensors_metadata(path: str | os.PathLike) -> Dict[str, str]:
    """The metadata of a ``.safetensors`` file (its header only: no tensor is read)."""
    with open(path, "rb") as fh:
        header, _ = _safetensors_header(path, fh)
    meta = header.get("__metadata__") or {}
    return {str(k): str(v) for k, v in meta.items()}


def check_safetensors(path: str | os.PathLike) -> None:
    """One ``CheckpointMismatchError`` line if a ``.safetensors`` file is not whole: its header unreadable, or
    its tensors' bytes running past (or stopping short of) the end of the file. Reads the header only."""
    size = os.path.getsize(path)
    with open(path, "rb") as fh:
        header, start = _safetensors_header(path, fh)
    ends = [info["data_offsets"][1] for name, info in header.items()
            if name != "__metadata__" and isinstance(info, dict) and "data_offsets" in info]
    described = start + max(ends, default=0)
    if described != size:
        raise CheckpointMismatchError(f"{path} is truncated or corrupt: its header describes {described:,} bytes, "
                                      f"the file has {size:,}")


def read_safetensors(path: str | os.PathLike) -> Tuple[Dict[str, torch.Tensor], Dict[str, str]]:
    """(tensors, metadata) of a ``.safetensors`` file, one ordinary allocation per tensor (no memory map).

    ``safetensors.torch.load_file`` maps the whole file: every tensor keeps the one mapping alive, so pages once
    read stay resident until the last tensor goes -- converting weights to bf16 for inference would then keep
    their float32 pages as well (docs/precision.md has the measured peaks)."""
    out = {}
    size = os.path.getsize(path)
    with open(path, "rb") as fh:
        header, start = _safetensors_header(path, fh)
        meta = {str(k): str(v) for k, v in (header.pop("__metadata__", None) or {}).items()}
        for name, info in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
            if info["dtype"] not in _SAFETENSORS_DTYPES:
                raise CheckpointMismatchError(f"{path}: tensor {name} has unsupported dtype {info['dtype']}")
            begin, end = info["data_offsets"]
            t = torch.empty(info["shape"], dtype=_SAFETENSORS_DTYPES[info["dtype"]])
            raw = t.reshape(-1).view(torch.uint8)  # the tensor's bytes (little-endian, as the format stores them)
            if raw.numel() != end - begin:
                raise CheckpointMismatchError(f"{path}: tensor {name} has {end - begin} bytes for shape "
                                              f"{info['shape']} {info['dtype']}")
            if start + end > size:
                raise CheckpointMismatchError(f"{path} is truncated (tensor {name})")
            fh.seek(start + begin)
            if raw.numel() and fh.readinto(memoryview(raw.numpy())) != raw.numel():
                raise CheckpointMismatchError(f"{path} is truncated (tensor {name})")
            out[name] = t
    return out, meta


# ---------------------------------------------------------------------------------------------------------------
# Ownership: what the program may replace or remove (docs/safety.md)
# ---------------------------------------------------------------------------------------------------------------
MARKER_NAME = ".varformer-owned"
_MARKER_HEAD = "varformer: "
_MARKER_TEXT = ("This folder was made by varformer. Its commands replace or remove only what they made in it, and "
                "only while this file is here;\nwithout it they treat the folder as yours and change nothing in it.\n")


def folder_kind(folder: str | os.PathLike) -> Optional[str]:
    """What the marker of ``folder`` says it is ("training run", "demo set", ...), or None: no marker (a folder
    of the user's, or one an earlier version made before markers existed)."""
    try:
        with open(os.path.join(folder, MARKER_NAME), encoding="utf-8") as fh:
            first = fh.readline().strip()
    except (OSError, UnicodeDecodeError):
        return None
    return first[len(_MARKER_HEAD):] if first.startswith(_MARKER_HEAD) else None


def folder_entries(folder: str | os.PathLike) -> List[str]:
    """The names in ``folder`` other than its marker (``[]`` for a folder that does not exist)."""
    try:
        return sorted(n for n in os.listdir(folder) if n != MARKER_NAME)
    except (FileNotFoundError, NotADirectoryError):
        return []


def _unwritable(path: str | os.PathLike) -> Optional[str]:
    """Why ``path`` cannot become a folder this process writes into (a file on the way, no write permission in
    the nearest existing folder above it), or None."""
    path = os.path.abspath(path)
    probe = path
    while not os.path.lexists(probe) and os.path.dirname(probe) != probe:
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        return "it is a file, not a folder" if probe == path else f"{probe} is a file, not a folder"
    if not os.access(probe, os.W_OK | os.X_OK):
        return f"no write permission in {probe}"
    return None


def check_writable_folder(folder: str | os.PathLike, what: str) -> None:
    """One ``OutputError`` line if ``folder`` cannot become a folder this process writes into: it (or a folder
    above it) is a file, or the nearest existing folder above it is not writable. Nothing is created."""
    why = _unwritable(folder)
    if why:
        raise OutputError(f"{what} {folder} cannot be written: {why}")


def make_folder(folder: str | os.PathLike, what: str = "output folder") -> None:
    """``os.makedirs`` with one ``OutputError`` line instead of an ``OSError`` traceback."""
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        check_writable_folder(folder, what)  # says why in the usual words, if it can
        raise OutputError(f"cannot create {what} {folder}: {e.strerror or e}") from None


def mark_folder(folder: str | os.PathLike, kind: str) -> None:
    """Create ``folder`` (and the folders above it) and its marker naming ``kind``: from now on the program may
    replace or remove what it makes there."""
    make_folder(folder)
    if folder_kind(folder) != kind:
        write_text_atomic(os.path.join(folder, MARKER_NAME), f"{_MARKER_HEAD}{kind}\n{_MARKER_TEXT}")


def claim_folder(folder: str | os.PathLike, kind: str, what: str,
                 recognized: Optional[Callable[[str], bool]] = None) -> str:
    """Whether the program may write into ``folder`` as a ``kind`` folder, decided before anything is written:
    ``new`` (it does not exist), ``empty``, ``marked`` (its marker names ``kind``) or ``recognized`` (no marker,
    but ``recognized(folder)`` knows it as one an earlier version made). A file, a folder marked as another kind
    and a non-empty folder of the user's are refused in one ``OutputError`` line. Nothing is written: the caller
    marks the folder (``mark_folder``) when its work starts."""
    check_writable_folder(folder, what)
    if not os.path.exists(folder):
        return "new"
    found = folder_kind(folder)
    if found == kind:
        return "marked"
    if found is not None:
        raise OutputError(f"{what} {folder} holds a varformer {found}, not a {kind}: choose another folder")
    entries = folder_entries(folder)
    if not entries:
        return "empty"
    if recognized is not None and recognized(str(folder)):
        return "recognized"
    shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
    raise OutputError(f"{what} {folder} is a non-empty folder that varformer did not make ({shown}; no "
                      f"{MARKER_NAME} marker): nothing in it is replaced or removed; choose a new or empty folder")


def remove_owned(folder: str | os.PathLike, kind: str, names: Iterable[str]) -> List[str]:
    """Remove the entries ``names`` (files or whole folders, by plain name) of ``folder`` -- only if its marker
    says it is a ``kind`` folder of this program's; returns the names removed."""
    found = folder_kind(folder)
    if found != kind:
        raise OutputError(f"{folder} is not marked as a varformer {kind} ({MARKER_NAME} "
                          f"{'missing' if found is None else 'says ' + found}): nothing in it is removed")
    removed = []
    for name in names:
        if not name or name in (".", "..", MARKER_NAME) or os.sep in name or (os.altsep and os.altsep in name):
            raise ValueError(f"remove_owned takes plain entry names, got {name!r}")
        path = os.path.join(folder, name)
        if os.path.islink(path) or os.path.isfile(path):
            os.remove(path)
        elif os.path.isdir(path):
            shutil.rmtree(path)
        else:
            continue
        removed.append(name)
    return removed


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether two paths name one file (links and relative paths resolved; hard links when both exist)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


def check_output_file(path: str | os.PathLike, inputs: Sequence[str | os.PathLike] = (), overwrite: bool = False,
                      what: str = "output", describe: Optional[Callable[[str], str]] = None) -> Optional[str]:
    """One ``OutputError`` line before any work if ``path`` cannot be written as an output file: it is one of
    ``inputs`` (never, whatever the flags: it would be read while replaced), a folder, under a file or in a folder
    that cannot be written, or an existing file while ``overwrite`` is off (``describe(path)`` says what it is).
    Returns a note when an existing file will be replaced."""
    for source in inputs:
        if source is not None and os.path.exists(source) and same_file(path, source):
            raise OutputError(f"{what} {path} is also an input ({source}): an input is never replaced by its own "
                              f"output; choose another output")
    if os.path.isdir(path):
        raise OutputError(f"{what} {path} is a folder; give the output file's name")
    why = _unwritable(os.path.dirname(os.path.abspath(path)))
    if why:
        raise OutputError(f"{what} {path} cannot be written: {why.replace('it is a file', 'its folder is a file')}")
    if not os.path.lexists(path):
        return None
    what_it_is = _described(path, describe)
    if not overwrite:
        raise OutputError(f"{what} {path} already exists ({what_it_is}); pass --overwrite to replace it, or choose "
                          f"another output")
    return f"{path} ({what_it_is}) is replaced (--overwrite)"


def _described(path: str | os.PathLike, describe: Optional[Callable[[str], str]]) -> str:
    if describe is None:
        return "a file"
    try:
        return describe(str(path))
    except Exception as e:  # what the file is only decorates the message; an unreadable file is still a file
        return f"a file that cannot be read as weights: {str(e).splitlines()[0] if str(e) else type(e).__name__}"


def create_exclusive(path: str | os.PathLike, text: str) -> bool:
    """Create ``path`` holding ``text`` if no file of that name exists: True if this call created it. The name
    appears with its whole content (written to a temporary, then hard-linked: ``link`` fails when the name
    exists), so no reader ever sees it empty or half written. On a file system without hard links, an
    ``O_EXCL`` create, then the write (readers must then take an empty file for a busy one)."""
    tmp = temporary_name(path)
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
        try:
            os.link(tmp, path)
            return True
        except FileExistsError:
            return False
        except OSError:  # no hard links here (some network and FUSE file systems)
            pass
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        return True
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
