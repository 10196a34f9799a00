"""VARestorer's official weight layouts <-> ours.

    cfg, sd = convert_varestorer(official_sd)    # varestorer.pth -> cfg (sizes read from the tensors), transformer.*
    official = to_official_varestorer(sd, settings)   # our state dict -> {"model", "vae", "swinir"} official dicts
    shapes = official_varestorer_shapes(settings)     # key -> shape of varestorer.pth (its zero_k_bias buffers too)

Ours: ``transformer.<official key>`` (the official BInfinity keys with the LoRA wrapper's ``.linear`` /
``.lora_down`` / ``.lora_up``), ``vae.<official key>`` (the ``Conv``/``Normalize`` layout of
``infinity_vae_d32reg.pth``), ``swinir.<key>`` (DiffBIR's keys with ``residual_group.`` dropped,
``varformer.backbone.swinir``). Constant buffers are not stored: the converters check the file's copies
(``zero_k_bias`` all zero, SwinIR's indices and masks equal to ours, the VAE's bit mask) and drop them, and drop the
mask buffers the official loader drops; ``to_official_varestorer`` puts them back.
"""
from __future__ import annotations

from typing import Dict, Mapping, Optional, Tuple

import torch

from varformer.backbone.infinity.load import (infinity_layout, official_infinity_buffers,
                                              strip_infinity_buffers)
from varformer.backbone.state_dict_check import key_mismatch
from varformer.backbone.swinir import swinir_to_official
from varformer.errors import CheckpointMismatchError
from varformer.varestorer.lora import lora_infinity
from varformer.varestorer.settings import VARestorerSettings

TRANSFORMER_FIELDS = ("depth", "embed_dim", "num_heads", "text_channels", "lora_rank", "block_chunks", "codebook_dim")


def infer_varestorer_layout(official_sd: Mapping[str, torch.Tensor], source: str = "varestorer.pth"
                            ) -> Dict[str, int]:
    """depth, embed_dim, num_heads, text_channels, lora_rank, block_chunks, codebook_dim of ``varestorer.pth``."""
    lay = infinity_layout(official_sd, source)
    if not lay["lora_rank"]:
        raise CheckpointMismatchError(f"{source} has no LoRA tensors (…lora_down.weight): it is a plain Infinity "
                                      "(infinity_2b_reg.pth?), not VARestorer's varestorer.pth")
    return {k: lay[k] for k in TRANSFORMER_FIELDS}


def transformer_shapes(settings: VARestorerSettings) -> Dict[str, Tuple[int, ...]]:
    """Our transformer's tensor shapes (LoRA injected), built on the meta device."""
    with torch.device("meta"):
        t = lora_infinity(settings.lora_rank, **settings.transformer_kwargs())
    return {k: tuple(v.shape) for k, v in t.state_dict().items()}


def convert_varestorer(official_sd: Mapping[str, torch.Tensor], text_maxlen: int = 512,
                       source: str = "varestorer.pth") -> Tuple[Dict[str, int], Dict[str, torch.Tensor]]:
    """Official ``varestorer.pth`` state dict -> (cfg: depth, embed_dim, num_heads, text_channels, lora_rank,
    block_chunks, codebook_dim; our ``transformer.*`` state dict). Strict: every tensor of our LoRA-injected
    transformer must be there with its shape, nothing else but the constant buffers (checked, dropped)."""
    if not isinstance(official_sd, Mapping) or not all(isinstance(v, torch.Tensor) for v in official_sd.values()):
        raise CheckpointMismatchError(f"{source} is not a state dict of tensors")
    cfg = infer_varestorer_layout(official_sd, source)
    settings = VARestorerSettings(**cfg, text_maxlen=text_maxlen, swinir=False).validate()
    sd = strip_infinity_buffers(official_sd, text_maxlen, source)
    mismatch = key_mismatch(transformer_shapes(settings), sd)
    if mismatch:
        raise CheckpointMismatchError(" ".join([f"{source} is not the official VARestorer layout for {cfg}:",
                                                *mismatch]))
    return cfg, {"transformer." + k: v for k, v in sd.items()}


def official_varestorer_shapes(settings: VARestorerSettings) -> Dict[str, Tuple[int, ...]]:
    """key -> shape of the official ``varestorer.pth`` for these settings (the ``zero_k_bias`` buffers included)."""
    with torch.device("meta"):
        t = lora_infinity(settings.lora_rank, **settings.transformer_kwargs())
    shapes = {k: tuple(v.shape) for k, v in t.state_dict().items()}
    shapes.update(official_infinity_buffers(t))
    return shapes


def to_official_varestorer(state_dict: Mapping[str, torch.Tensor], settings: VARestorerSettings
                           ) -> Dict[str, Optional[Dict[str, torch.Tensor]]]:
    """Our state dict -> {"model": varestorer.pth state dict (with its zero buffers), "vae": the BSQ-VAE state dict
    (``infinity_vae_d32reg.pth``'s "vae" entry), "swinir": DiffBIR's SwinIR state dict or None}. The model must not
    have been merged (``merge_lora`` changes the keys)."""
    parts: Dict[str, Dict[str, torch.Tensor]] = {"transformer": {}, "vae": {}, "swinir": {}}
    for k, v in state_dict.items():
        head, _, rest = k.partition(".")
        if head not in parts:
            raise CheckpointMismatchError(f"unexpected key {k} in a VARestorer state dict")
        parts[head][rest] = v
    if settings.lora_rank and not any(".lora_down." in k for k in parts["transformer"]):
        raise CheckpointMismatchError("this VARestorer's LoRA was merged into its weights: the official layout "
                                      "needs the separate lora_down / lora_up tensors")
    model = dict(parts["transformer"])
    official = official_varestorer_shapes(settings)
    for k, shape in official.items():
        if k.endswith("zero_k_bias"):
            model[k] = torch.zeros(shape)
    swinir = (swinir_to_official(parts["swinir"], settings.swinir_kwargs()) if settings.swinir else None)
    return {"model": model, "vae": dict(parts["vae"]), "swinir": swinir}
