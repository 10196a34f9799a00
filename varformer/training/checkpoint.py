"""Training checkpoints: atomic writes, keep-last-K, ``resume=auto`` that skips unreadable (truncated) files.

A checkpoint is one ``torch.save``d dict. Frozen parameters (the VQVAE and VAR blocks: hundreds of millions of
weights that never change) are not stored; they come from their own weight files when the model is built, and
``load_trainable_state`` checks that exactly those were left out.
"""
from __future__ import annotations

import glob
import os
import re
import warnings
from typing import Dict, List, Optional, Tuple

import torch
from torch import nn

from varformer.errors import CheckpointMismatchError, ConfigError

CKPT_PATTERN = re.compile(r"^ckpt_(\d{8})\.pt$")


def checkpoint_name(step: int) -> str:
    return f"ckpt_{step:08d}.pt"


def atomic_torch_save(obj, path: str) -> None:
    """Write to ``path.tmp`` in the same folder, flush to disk, then rename: a crash never leaves a half file
    under the final name."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = f"{path}.tmp.{os.getpid()}"
    try:
        with open(tmp, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def list_checkpoints(folder: str) -> List[Tuple[int, str]]:
    """``(step, path)`` of every ``ckpt_XXXXXXXX.pt`` in ``folder``, oldest first."""
    found = []
    for path in glob.glob(os.path.join(folder, "ckpt_*.pt")):
        m = CKPT_PATTERN.match(os.path.basename(path))
        if m:
            found.append((int(m.group(1)), path))
    return sorted(found)


def prune_checkpoints(folder: str, keep_last: int) -> List[str]:
    """Delete all but the newest ``keep_last`` checkpoints (``keep_last <= 0`` keeps all); returns the removed."""
    if keep_last <= 0:
        return []
    old = list_checkpoints(folder)[:-keep_last]
    for _, path in old:
        os.remove(path)
    return [p for _, p in old]


def load_checkpoint_file(path: str, map_location="cpu") -> dict:
    # weights_only=False: the file holds RNG states (tuples, NumPy arrays) written by this trainer.
    ckpt = torch.load(path, map_location=map_location, weights_only=False)
    if not isinstance(ckpt, dict) or "step" not in ckpt or "model" not in ckpt:
        raise CheckpointMismatchError(f"{path} is not a training checkpoint of this project (no 'step'/'model')")
    return ckpt


def find_resume_checkpoint(resume: str, folder: str) -> Optional[Tuple[str, dict]]:
    """Resolve ``train.resume``: ``none`` -> None; a path -> that file (errors if unreadable); ``auto`` -> the
    newest readable checkpoint in ``folder``, skipping unreadable ones with a warning (None if there is none)."""
    if resume in ("none", "", None):
        return None
    if resume != "auto":
        if not os.path.isfile(resume):
            raise ConfigError(f"train.resume: checkpoint not found: {resume}")
        return resume, load_checkpoint_file(resume)
    for step, path in reversed(list_checkpoints(folder)):
        try:
            return path, load_checkpoint_file(path)
        except Exception as e:  # a truncated zip, a torn write from another tool, a foreign file
            warnings.warn(f"resume=auto: skipping unreadable checkpoint {path} (step {step}): "
                          f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}", RuntimeWarning)
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
