"""Strict loading of one of our state dicts into a model, with an error that says what the checkpoint is and what
the model is (stage, depth, width, number of cross-attention blocks) instead of a list of key names alone."""
from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from varformer.backbone.state_dict_check import check_filled, key_mismatch
from varformer.errors import CheckpointMismatchError
from varformer.model.settings import STAGE_CLASSES, STAGE_DESCRIPTIONS, architecture_of


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
    mismatch = key_mismatch(own, state_dict)
    if mismatch:
        diffs = []
        if settings is not None:
            diffs = [f"{k}: checkpoint {got[k]}, model {getattr(settings, k)}"
                     for k in ("depth", "vae_ch", "n_cross", "dec_adjust", "prior", "aft", "mixup_skip")
                     if k in got and got[k] != getattr(settings, k)]
        parts = [f"{source} does not fit the model" + (f" ({'; '.join(diffs)})" if diffs else "") + ":"]
        raise CheckpointMismatchError(" ".join(parts + mismatch))
    model.load_state_dict(dict(state_dict), strict=True, assign=assign)
    check_filled(model, source)
