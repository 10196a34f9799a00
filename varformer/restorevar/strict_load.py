"""Strict loading of one of our RestoreVAR state dicts, with an error that names the settings that differ (depth,
width, refiner depth, ...) instead of only listing key names."""
from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from varformer.backbone.state_dict_check import check_filled, key_mismatch
from varformer.errors import CheckpointMismatchError
from varformer.restorevar.settings import architecture_of


def vqvae_width(vae_sd: Mapping[str, torch.Tensor], source: str) -> int:
    w = vae_sd.get("encoder.conv_in.weight")
    if w is None or "decoder.conv_out.weight" not in vae_sd or "quantize.embedding.weight" not in vae_sd:
        raise CheckpointMismatchError(f"{source} is not a VQVAE state dict (no encoder.conv_in / decoder.conv_out / "
                                      "quantize.embedding tensors)")
    return int(w.shape[0])


def load_checked(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str = "state dict",
                 assign: bool = False) -> None:
    """``model.load_state_dict(state_dict, strict=True)`` after checking keys and shapes; nothing may be left on
    the meta device."""
    own = model.state_dict()
    mismatch = key_mismatch(own, state_dict)
    if mismatch:
        got, want = architecture_of(state_dict), architecture_of(own)
        diffs = [f"{k}: checkpoint {got[k]}, model {want[k]}" for k in got
                 if got[k] is not None and want[k] is not None and got[k] != want[k]]
        parts = [f"{source} does not fit the RestoreVAR model" + (f" ({'; '.join(diffs)})" if diffs else "") + ":"]
        raise CheckpointMismatchError(" ".join(parts + mismatch))
    model.load_state_dict(dict(state_dict), strict=True, assign=assign)
    check_filled(model, source)
