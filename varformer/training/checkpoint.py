"""Training checkpoints: atomic writes, keep-last-K, ``resume=auto`` that skips unreadable (truncated) files.

A checkpoint is one ``torch.save``d dict of tensors, numbers and strings (the RNG states converted to tensors:
``varformer.training.distributed.rng_state``), so it loads with ``torch.load(weights_only=True)``: no code in a
file can run when it is read. Frozen parameters (the VQVAE and VAR blocks: hundreds of millions of weights that
never change) are not stored; they come from their own weight files when the model is built, and
``load_trainable_state`` checks that exactly those were left out. A checkpoint is written only after its weights
were checked finite (``weights_finite: True``).

Only complete files count: an interrupted write leaves ``.ckpt_*.pt.PID.tmp`` (``varformer.files``' temporary;
``ckpt_*.pt.tmp.PID`` before), which is never listed and is removed by the next run into the folder
(``remove_stale_temporaries``); a truncated checkpoint is skipped by ``resume=auto`` and not counted toward
``keep_last``.
"""
from __future__ import annotations

import glob
import os
import re
import warnings
import zipfile
from typing import Dict, List, Optional, Tuple

import torch
from torch import nn

from varformer.backbone.hub import read_torch_file
from varformer.errors import CheckpointMismatchError, ConfigError
from varformer.files import save_torch_atomic

CKPT_PATTERN = re.compile(r"^ckpt_(\d{8})\.pt$")
# a checkpoint write's temporary: varformer.files' ".NAME.PID.tmp", and this module's older "NAME.tmp.PID"
TMP_PATTERN = re.compile(r"^(?:\.ckpt_\d{8}\.pt\.(\d+)\.tmp|ckpt_\d{8}\.pt\.tmp\.(\d+))$")


def checkpoint_name(step: int) -> str:
    return f"ckpt_{step:08d}.pt"


def atomic_torch_save(obj, path: str) -> None:
    """Written to a temporary in the same folder, flushed to disk, then renamed (``varformer.files``): a crash
    never leaves a half file under the final name."""
    save_torch_atomic(obj, path, fsync=True)


def list_checkpoints(folder: str) -> List[Tuple[int, str]]:
    """``(step, path)`` of every ``ckpt_XXXXXXXX.pt`` in ``folder``, oldest first."""
    found = []
    for path in glob.glob(os.path.join(folder, "ckpt_*.pt")):
        m = CKPT_PATTERN.match(os.path.basename(path))
        if m:
            found.append((int(m.group(1)), path))
    return sorted(found)


def is_complete(path: str) -> bool:
    """Whether a checkpoint file is a complete torch zip archive (its central directory, at the end of the file,
    is read: a truncated file has none). Cheap: no tensor is read."""
    try:
        with zipfile.ZipFile(path) as zf:
            return bool(zf.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def prune_checkpoints(folder: str, keep_last: int) -> List[str]:
    """Delete all but the newest ``keep_last`` complete checkpoints (``keep_last <= 0`` keeps all); incomplete
    files are not counted (and left alone: resume skips them). Returns the removed paths."""
    if keep_last <= 0:
        return []
    complete = [(s, p) for s, p in list_checkpoints(folder) if is_complete(p)]
    old = complete[:-keep_last]
    for _, path in old:
        os.remove(path)
    return [p for _, p in old]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_stale_temporaries(folder: str) -> List[str]:
    """Remove the temporaries of checkpoint writes that were interrupted (their process is gone)."""
    removed = []
    for path in glob.glob(os.path.join(folder, "ckpt_*.pt.tmp.*")) + glob.glob(os.path.join(folder, ".ckpt_*.tmp")):
        m = TMP_PATTERN.match(os.path.basename(path))
        if m and not pid_alive(int(m.group(1) or m.group(2))):
            os.remove(path)
            removed.append(path)
    return removed


def read_checkpoint(path: str, map_location="cpu", mmap: bool = False) -> dict:
    """A training checkpoint of this project, read with ``weights_only=True``; every failure is one line.
    ``mmap=True`` maps the tensors instead of reading them (a cheap look at ``step`` and ``config``)."""
    ckpt = read_torch_file(path, map_location, mmap=mmap)
    if not isinstance(ckpt, dict) or "step" not in ckpt or "model" not in ckpt:
        raise CheckpointMismatchError(f"{path} is not a training checkpoint of this project (no 'step'/'model')")
    return ckpt


def load_checkpoint_file(path: str, map_location="cpu") -> dict:
    return read_checkpoint(path, map_location)


def find_resume_checkpoint(resume: str, folder: str) -> Optional[Tuple[str, dict]]:
    """Resolve ``train.resume``: ``none`` -> None; a path -> that file (errors if unreadable); ``auto`` -> the
    newest readable checkpoint in ``folder``, skipping unreadable ones with a warning (None if there is none)."""
    if resume in ("none", "", None):
        return None
    if resume != "auto":
        if not os.path.isfile(resume):
            raise ConfigError(f"train.resume: checkpoint not found: {resume}")
        return resume, read_checkpoint(resume)
    for step, path in reversed(list_checkpoints(folder)):
        try:
            return path, read_checkpoint(path)
        except CheckpointMismatchError as e:  # a truncated zip, a torn write from another tool, a foreign file
            warnings.warn(f"resume=auto: skipping unreadable checkpoint {path} (step {step}): {e}", RuntimeWarning)
    return None


def trainable_state_dict(model: nn.Module, include_frozen: bool = False) -> Dict[str, torch.Tensor]:
    """Every parameter that trains plus every persistent buffer; frozen parameters are left out unless
    ``include_frozen`` (a backbone that comes from a seed rather than from a weight file)."""
    frozen = set() if include_frozen else {n for n, p in model.named_parameters() if not p.requires_grad}
    return {k: v.detach().clone() for k, v in model.state_dict().items() if k not in frozen}


def load_trainable_state(model: nn.Module, state: Dict[str, torch.Tensor]) -> None:
    """Load a ``trainable_state_dict``: every key must exist; the keys left out must be exactly frozen ones."""
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    own = model.state_dict()
    unknown = sorted(set(state) - set(own))
    missing = sorted(set(own) - set(state) - frozen)
    if unknown or missing:
        raise CheckpointMismatchError(
            "checkpoint does not match the model being trained: "
            f"{len(unknown)} unexpected keys {unknown[:5]}, {len(missing)} trainable keys missing {missing[:5]}")
    for k, v in state.items():
        if own[k].shape != v.shape:
            raise CheckpointMismatchError(f"checkpoint tensor '{k}' has shape {tuple(v.shape)}, "
                                          f"the model expects {tuple(own[k].shape)}")
    model.load_state_dict(state, strict=False)
