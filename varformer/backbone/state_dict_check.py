"""Strict state-dict checks with one-line errors, shared by every loader (the official VAR/VQVAE files, our
VarFormer and RestoreVAR checkpoints): which keys are missing, unexpected or of another shape, and whether an
``assign`` load left a tensor on the meta device."""
from __future__ import annotations

from typing import Iterable, List, Mapping, Sequence, Tuple, Union

import torch
from torch import nn

from varformer.errors import CheckpointMismatchError


def first_keys(keys: Iterable[str], n: int = 4) -> str:
    """'a, b, c, d, ... (7 more)': the first ``n`` keys in sorted order, for an error message."""
    keys = sorted(keys)
    return ", ".join(keys[:n]) + (f", ... ({len(keys) - n} more)" if len(keys) > n else "")


def _shape(v: Union[torch.Tensor, Sequence[int]]) -> Tuple[int, ...]:
    return tuple(v.shape) if isinstance(v, torch.Tensor) else tuple(v)


def key_mismatch(own: Mapping[str, Union[torch.Tensor, Sequence[int]]], state_dict: Mapping[str, torch.Tensor],
                 ignore_shape: Iterable[str] = ()) -> List[str]:
    """The parts of a mismatch message ('3 missing keys (...);', 'N unexpected keys (...);', 'N keys with other
    shapes (e.g. ...);'), empty when ``state_dict`` has exactly the keys and shapes of ``own`` (tensors or
    shapes)."""
    ignore = set(ignore_shape)
    missing = own.keys() - state_dict.keys()
    unexpected = state_dict.keys() - own.keys()
    wrong = sorted(k for k in own.keys() & state_dict.keys()
                   if k not in ignore and _shape(own[k]) != _shape(state_dict[k]))
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing keys ({first_keys(missing)});")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys ({first_keys(unexpected)});")
    if wrong:
        k = wrong[0]
        parts.append(f"{len(wrong)} keys with other shapes (e.g. {k}: checkpoint {tuple(state_dict[k].shape)}, "
                     f"model {_shape(own[k])});")
    return parts


def check_filled(model: nn.Module, source: str) -> None:
    """After a load with ``assign=True`` into a model built on the meta device: every tensor must be real."""
    left = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if left:
        raise CheckpointMismatchError(f"{source} left {len(left)} tensors uninitialised ({first_keys(left)})")
