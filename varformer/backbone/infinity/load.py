"""Infinity's official weight files, loaded strictly into our modules (full precision, built on the meta device and
assigned): ``infinity_2b_reg.pth`` (the transformer) and ``infinity_vae_d32reg.pth`` (the BSQ-VAE), both
``FoundationVision/Infinity`` on Hugging Face.

What strict means here (every other key, a missing key or another shape raises one ``CheckpointMismatchError``):

- transformer: every parameter of our ``Infinity`` must be in the file with its shape. The file's constant buffers
  are not needed: ``*.zero_k_bias`` (must be all zero when present) and ``lvl_1L``, ``attn_bias_for_masking``,
  ``Infinity_visible_kvlen``, ``Infinity_invisible_qlen`` (dropped, as the official ``load_state_dict`` drops them);
  the RoPE table is recomputed. ``cfg_uncond`` is trimmed to ``text_maxlen`` rows as the official loader trims it.
- VAE: the file's ``"vae"`` entry (or a bare state dict); keys in the official ``Conv``/``Normalize`` layout
  (``*.conv.weight``, ``*.norm.weight``) or the plain one the official ``load_cnn`` also maps (``conv_in.weight``,
  ``norm1.weight``). The quantiser's ``quantizer.lfq.mask`` buffer (powers of two) is checked and dropped.

    vae = load_bsq_vae("checkpoints/infinity_vae_d32reg.pth")
    infinity = load_infinity("checkpoints/infinity_2b_reg.pth")         # sizes read from the tensors
"""
from __future__ import annotations

import os
import re
from typing import Dict, Mapping, Sequence, Tuple

import torch
from torch import nn

from varformer.files import read_torch_file
from varformer.backbone.infinity.bsq_vae import BSQVAE
from varformer.backbone.infinity.rope2d import SCHEDULE_025M
from varformer.backbone.infinity.transformer import Infinity
from varformer.backbone.state_dict_check import check_filled, first_keys, key_mismatch
from varformer.errors import CheckpointMismatchError

DROPPED_BUFFERS = ("lvl_1L", "attn_bias_for_masking", "Infinity_visible_kvlen", "Infinity_invisible_qlen")
CONV_NAMES = ("conv_in", "conv_out", "conv1", "conv2", "nin_shortcut")    # BSQ-VAE convolutions in a Conv wrapper
NORM_NAMES = ("norm1", "norm2", "norm_out")                               # GroupNorms in a Normalize wrapper
LORA_KEY = re.compile(r"\.(lora_down|lora_up|linear)\.")


def read_checkpoint(sd_or_path, what: str):
    """A dict given as such, or the object in a weights file (``torch.load(weights_only=True)``)."""
    if isinstance(sd_or_path, (str, os.PathLike)):
        return read_torch_file(sd_or_path)
    if isinstance(sd_or_path, dict):
        return sd_or_path
    raise CheckpointMismatchError(f"{what}: expected a state dict or a path, got {type(sd_or_path).__name__}")


def tensors_only(sd, what: str) -> Dict[str, torch.Tensor]:
    if not isinstance(sd, dict) or not sd or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointMismatchError(f"{what} is not a state dict of tensors")
    return dict(sd)


def load_assigned(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str, expected: str) -> None:
    """Strict load (keys and shapes checked first: one-line error) with ``assign=True``; nothing left on meta."""
    mismatch = key_mismatch(model.state_dict(), state_dict)
    if mismatch:
        raise CheckpointMismatchError(" ".join([f"{source} does not fit {expected}:", *mismatch]))
    model.load_state_dict(dict(state_dict), strict=True, assign=True)
    check_filled(model, source)


# ---------------------------------------------------------------------------------------------------------------
# the transformer
# ---------------------------------------------------------------------------------------------------------------
def infinity_layout(sd: Mapping[str, torch.Tensor], source: str = "state dict") -> Dict[str, int]:
    """depth, embed_dim, num_heads, text_channels, block_chunks, codebook_dim, lora_rank of an official (possibly
    LoRA-injected) Infinity state dict, read from its tensors."""
    need = ("pos_start", "word_embed.weight", "text_norm.weight", "head.weight")
    if any(k not in sd for k in need):
        kind = ("a BSQ-VAE" if any(k.startswith(("encoder.", "vae.", "decoder.")) for k in sd) else
                "a VAR transformer" if "pos_1LC" in sd else "not an Infinity transformer")
        raise CheckpointMismatchError(f"{source} is {kind}: expected Infinity's layout "
                                      f"({', '.join(need)}, block_chunks.*/blocks.*)")
    chunks = {(int(m.group(1)), int(m.group(2))) for k in sd
              for m in [re.match(r"block_chunks\.(\d+)\.module\.(\d+)\.", k)] if m}
    flat = {int(m.group(1)) for k in sd for m in [re.match(r"blocks\.(\d+)\.", k)] if m}
    if chunks:
        n_chunks = max(c for c, _ in chunks) + 1
        depth = n_chunks * (max(j for _, j in chunks) + 1)
    elif flat:
        n_chunks, depth = 1, max(flat) + 1
    else:
        raise CheckpointMismatchError(f"{source} has no transformer blocks (block_chunks.* or blocks.*)")
    prefix = "block_chunks.0.module.0." if chunks else "blocks.0."
    scale_mul = sd.get(prefix + "sa.scale_mul_1H11")
    if scale_mul is None:
        raise CheckpointMismatchError(f"{source} lacks {prefix}sa.scale_mul_1H11 (not Infinity's cosine attention)")
    down = sd.get(prefix + "sa.mat_qkv.lora_down.weight")
    return {"depth": depth, "embed_dim": int(sd["pos_start"].shape[-1]), "num_heads": int(scale_mul.shape[1]),
            "text_channels": int(sd["text_norm.weight"].shape[0]), "block_chunks": n_chunks,
            "codebook_dim": int(sd["word_embed.weight"].shape[1]),
            "lora_rank": int(down.shape[0]) if down is not None else 0}


def strip_infinity_buffers(sd: Mapping[str, torch.Tensor], text_maxlen: int, source: str
                           ) -> Dict[str, torch.Tensor]:
    """The official file without its constant buffers (checked or dropped, see the module docstring), with
    ``cfg_uncond`` trimmed to ``text_maxlen`` rows."""
    out = {}
    for k, v in sd.items():
        if k in DROPPED_BUFFERS:
            continue
        if k.endswith("zero_k_bias"):
            if torch.count_nonzero(v.detach().float().cpu()):
                raise CheckpointMismatchError(f"{source}: buffer {k} is not zero")
            continue
        out[k] = v
    uncond = out.get("cfg_uncond")
    if uncond is not None and uncond.shape[0] != text_maxlen:
        if uncond.shape[0] < text_maxlen:
            raise CheckpointMismatchError(f"{source}: cfg_uncond has {uncond.shape[0]} rows, fewer than the "
                                          f"{text_maxlen} text positions (the official loader pads them with its "
                                          f"random init; not reproduced)")
        out["cfg_uncond"] = uncond[:text_maxlen]
    return out


def official_infinity_buffers(model: Infinity) -> Dict[str, Tuple[int, ...]]:
    """The ``zero_k_bias`` buffers an official Infinity state dict carries, key -> shape (not ours: recomputed)."""
    out = {"text_proj_for_sos.ca.zero_k_bias": (model.C,)}
    names = [n for n, _ in model.named_modules()]
    for n in names:
        if n.endswith((".sa", ".ca")) and ("block_chunks." in n or n.startswith("blocks.")):
            out[f"{n}.zero_k_bias"] = (model.C,)
    return out


def load_infinity(sd_or_path, patch_nums: Sequence[int] = SCHEDULE_025M, text_maxlen: int = 512,
                  map_location: str | torch.device = "cpu") -> Infinity:
    """The official (not LoRA-injected) Infinity transformer, e.g. ``infinity_2b_reg.pth``, in eval mode."""
    source = str(sd_or_path) if isinstance(sd_or_path, (str, os.PathLike)) else "the Infinity state dict"
    sd = tensors_only(read_checkpoint(sd_or_path, source), source)
    if any(LORA_KEY.search(k) for k in sd):
        raise CheckpointMismatchError(f"{source} is a LoRA-injected model (…lora_down / …linear keys), not the plain "
                                      "Infinity transformer: `varformer convert --help` lists the converters of "
                                      "the methods built on it")
    lay = infinity_layout(sd, source)
    sd = {k: v.to(map_location) for k, v in strip_infinity_buffers(sd, text_maxlen, source).items()}
    with torch.device("meta"):
        model = Infinity(depth=lay["depth"], embed_dim=lay["embed_dim"], num_heads=lay["num_heads"],
                         text_channels=lay["text_channels"], text_maxlen=text_maxlen,
                         block_chunks=lay["block_chunks"], codebook_dim=lay["codebook_dim"], patch_nums=patch_nums)
    load_assigned(model, sd, source, f"Infinity({', '.join(f'{k}={v}' for k, v in lay.items() if k != 'lora_rank')})")
    return model.eval()


# ---------------------------------------------------------------------------------------------------------------
# the BSQ-VAE
# ---------------------------------------------------------------------------------------------------------------
def unwrap_vae_file(obj, source: str) -> Dict[str, torch.Tensor]:
    """The ``"vae"`` entry of the official file (it also holds ``"ema"``), or a bare state dict."""
    if isinstance(obj, dict) and "vae" in obj and isinstance(obj["vae"], dict):
        obj = obj["vae"]
    return tensors_only(obj, source)


def bsq_vae_layout(sd: Mapping[str, torch.Tensor], source: str = "state dict") -> Dict[str, object]:
    """base_ch, ch_mult, num_res_blocks, z_channels of a BSQ-VAE state dict in our (official) key layout."""
    if "encoder.conv_in.conv.weight" not in sd or "decoder.conv_out.conv.weight" not in sd:
        raise CheckpointMismatchError(f"{source} is not a BSQ-VAE state dict (no encoder.conv_in / "
                                      "decoder.conv_out)")
    base = int(sd["encoder.conv_in.conv.weight"].shape[0])
    levels = sorted({int(m.group(1)) for k in sd for m in [re.match(r"encoder\.down\.(\d+)\.", k)] if m})
    blocks = {int(m.group(1)) for k in sd for m in [re.match(r"encoder\.down\.0\.block\.(\d+)\.", k)] if m}
    mult = [int(sd[f"encoder.down.{i}.block.0.conv1.conv.weight"].shape[0]) // base for i in levels]
    return {"base_ch": base, "ch_mult": mult, "num_res_blocks": len(blocks),
            "z_channels": int(sd["encoder.conv_out.conv.weight"].shape[0])}


def bsq_vae_from_official(sd: Mapping[str, torch.Tensor], source: str = "state dict") -> Dict[str, torch.Tensor]:
    """Official keys (either layout ``load_cnn`` takes) -> ours; the quantiser's mask buffer checked and dropped."""
    out = {}
    for k, v in sd.items():
        if k == "quantizer.lfq.mask":
            want = 2 ** torch.arange(v.numel() - 1, -1, -1)
            if v.shape != want.shape or not torch.equal(v.detach().cpu().long(), want):
                raise CheckpointMismatchError(f"{source}: quantizer.lfq.mask is not the powers of two of BSQ")
            continue
        mod, _, leaf = k.rpartition(".")
        parts = mod.split(".")
        wrapped_conv = parts[-1] in CONV_NAMES or (parts[-1] == "conv" and len(parts) > 1
                                                   and parts[-2] in ("downsample", "upsample"))
        if leaf in ("weight", "bias") and (wrapped_conv or parts[-1] in NORM_NAMES):
            k = f"{mod}.{'conv' if wrapped_conv else 'norm'}.{leaf}"      # a plain nn.Conv2d / GroupNorm key
        out[k] = v
    return out


def load_bsq_vae(sd_or_path, map_location: str | torch.device = "cpu") -> BSQVAE:
    """The official BSQ-VAE (``infinity_vae_d32reg.pth``: its ``"vae"`` entry or a bare state dict), eval mode."""
    source = str(sd_or_path) if isinstance(sd_or_path, (str, os.PathLike)) else "the BSQ-VAE state dict"
    sd = bsq_vae_from_official(unwrap_vae_file(read_checkpoint(sd_or_path, source), source), source)
    lay = bsq_vae_layout(sd, source)
    unknown = [k for k in sd if not k.startswith(("encoder.", "decoder."))]
    if unknown:
        raise CheckpointMismatchError(f"{source}: {len(unknown)} keys outside the encoder/decoder "
                                      f"({first_keys(unknown)})")
    with torch.device("meta"):
        vae = BSQVAE(**lay)
    load_assigned(vae, {k: v.to(map_location) for k, v in sd.items()}, source,
                  f"BSQVAE({', '.join(f'{k}={v}' for k, v in lay.items())})")
    return vae.eval()
