"""Strict loading of one of our state dicts into a model, with an error that says what the checkpoint is and what
the model is (stage, depth, width, number of cross-attention blocks) instead of a list of key names alone."""
from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from varformer.errors import CheckpointMismatchError
from varformer.model.settings import STAGE_CLASSES, STAGE_DESCRIPTIONS, architecture_of


def _first(keys, n: int = 4) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:n]) + (", ..." if len(keys) > n else "")


def load_weights(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str = "state dict",
                 assign: bool = False) -> None:
    """``model.load_state_dict(state_dict, strict=True)`` after checking stage, keys and shapes; every tensor of the
    model must be filled (none left on the meta device)."""
    got = architecture_of(state_dict)
    settings = model.settings() if hasattr(model, "settings") else None
    if settings is not None and got["stage"] != settings.stage:
        raise CheckpointMismatchError(
            f"{source} is a {STAGE_DESCRIPTIONS[got['stage']]} checkpoint, but a {STAGE_DESCRIPTIONS[settings.stage]} "
            f"model was asked for; load it with {STAGE_CLASSES[got['stage']]} instead")
    own = model.state_dict()
    missing = own.keys() - state_dict.keys()
    unexpected = state_dict.keys() - own.keys()
    wrong = [k for k in own.keys() & state_dict.keys() if tuple(own[k].shape) != tuple(state_dict[k].shape)]
    if missing or unexpected or wrong:
        diffs = []
        if settings is not None:
            diffs = [f"{k}: checkpoint {got[k]}, model {getattr(settings, k)}"
                     for k in ("depth", "vae_ch", "n_cross", "dec_adjust", "prior", "aft", "mixup_skip")
                     if k in got and got[k] != getattr(settings, k)]
        parts = [f"{source} does not fit the model" + (f" ({'; '.join(diffs)})" if diffs else "") + ":"]
        for name, keys in (("missing", missing), ("unexpected", unexpected), ("wrongly shaped", wrong)):
            if keys:
                parts.append(f"{len(keys)} {name} keys ({_first(keys)});")
        raise CheckpointMismatchError(" ".join(parts))
    model.load_state_dict(dict(state_dict), strict=True, assign=assign)
    left = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if left:
        raise CheckpointMismatchError(f"{source} left {len(left)} tensors uninitialised ({_first(left)})")
