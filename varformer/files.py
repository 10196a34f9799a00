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
"""
from __future__ import annotations

import contextlib
import json
import os
import pickle
import zipfile
from pathlib import Path
from typing import Dict, Iterator, Optional, Tuple

import torch

from varformer.errors import CheckpointMismatchError

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
    target.parent.mkdir(parents=True, exist_ok=True)
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
    with atomic_output(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)


def save_torch_atomic(obj, path: str | os.PathLike, fsync: bool = False) -> None:
    """``torch.save`` through a temporary; what is saved must load with ``weights_only=True``."""
    with atomic_output(path, fsync=fsync) as tmp:
        torch.save(obj, tmp)


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
    """The one informative line of torch's weights-only refusal ("Unsupported global: GLOBAL numpy...")."""
    text = str(exc)
    reason = text.split("WeightsUnpickler error:", 1)[-1].strip().split("\n")[0] if text else ""
    return reason.split(" was not an allowed global")[0] or (text.splitlines()[0] if text else "no message")


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
