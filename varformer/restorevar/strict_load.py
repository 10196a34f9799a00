"""Strict loading of one of our RestoreVAR state dicts, with an error that names the settings that differ (depth,
width, refiner depth, ...) instead of only listing key names."""
from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from varformer.errors import CheckpointMismatchError
from varformer.restorevar.settings import architecture_of


def _first(keys, n: int = 4) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:n]) + (f", ... ({len(keys) - n} more)" if len(keys) > n else "")


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
    missing = own.keys() - state_dict.keys()
    unexpected = state_dict.keys() - own.keys()
    wrong = [k for k in own.keys() & state_dict.keys() if tuple(own[k].shape) != tuple(state_dict[k].shape)]
    if missing or unexpected or wrong:
        got, want = architecture_of(state_dict), architecture_of(own)
        diffs = [f"{k}: checkpoint {got[k]}, model {want[k]}" for k in got
                 if got[k] is not None and want[k] is not None and got[k] != want[k]]
        parts = [f"{source} does not fit the RestoreVAR model" + (f" ({'; '.join(diffs)})" if diffs else "") + ":"]
        for name, keys in (("missing", missing), ("unexpected", unexpected), ("wrongly shaped", wrong)):
            if keys:
                parts.append(f"{len(keys)} {name} keys ({_first(keys)});")
        raise CheckpointMismatchError(" ".join(parts))
    model.load_state_dict(dict(state_dict), strict=True, assign=assign)
    left = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if left:
        raise CheckpointMismatchError(f"{source} left {len(left)} tensors uninitialised ({_first(left)})")
