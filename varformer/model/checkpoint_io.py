"""Our model checkpoint format, strict loading with clear errors, and loading the official VQVAE/VAR backbone.

Format (``torch.save``, loadable with ``torch.load(weights_only=True)``)::

    {"format": "varformer", "version": 1,
     "config": {"stage": 2, "depth": 16, "vae_ch": 160, "n_cross": 8, "dec_adjust": False, "cfg": 0.5,
                "head_layout": "official"},
     "state_dict": {...}}

or a ``.safetensors`` file with the same config as JSON in its metadata (key ``varformer_config``).
``load_varformer`` also accepts the official BasicSR checkpoint (``params_ema``) and converts it on the fly.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Optional, Type

import torch
from torch import nn

from varformer.errors import CheckpointMismatchError, WeightsNotFoundError

FORMAT = "varformer"
VERSION = 1
CONFIG_KEYS = ("stage", "depth", "vae_ch", "n_cross", "dec_adjust", "cfg", "head_layout")


def model_class(stage: int):
    from varformer.model.varformer import VarFormer, VarFormerStage1
    if stage not in (1, 2):
        raise CheckpointMismatchError(f"unknown stage {stage!r} in checkpoint config (expected 1 or 2)")
    return VarFormer if stage == 2 else VarFormerStage1


def _stage_name(stage: int) -> str:
    return {1: "stage-1 (VarFormerStage1: Adapter + cross-attention, no U-Net)",
            2: "stage-2 (VarFormer: the full restorer)"}[stage]


def constructor_kwargs(config: dict) -> dict:
    kw = {k: config[k] for k in ("depth", "vae_ch", "n_cross", "cfg", "head_layout") if k in config}
    if config.get("stage", 2) == 2:
        kw["dec_adjust"] = bool(config.get("dec_adjust", False))
    return kw


def infer_config(state_dict: dict) -> dict:
    """Architecture of one of *our* state dicts, read from its tensors (for error messages and checks)."""
    cfg = {"stage": 2 if any(k.startswith("unet_encoder.") for k in state_dict) else 1}
    blocks = {int(m.group(1)) for k in state_dict for m in [re.match(r"var\.blocks\.(\d+)\.", k)] if m}
    cfg["depth"] = max(blocks) + 1 if blocks else None
    cross = {int(m.group(1)) for k in state_dict for m in [re.match(r"cross_attn\.(\d+)\.", k)] if m}
    cfg["n_cross"] = max(cross) + 1 if cross else 0
    w = state_dict.get("vae.encoder.conv_in.weight")
    cfg["vae_ch"] = int(w.shape[0]) if w is not None else None
    if cfg["stage"] == 2:
        cfg["dec_adjust"] = any(k.startswith("unet_decoder.align.") for k in state_dict)
    return cfg


def load_weights(model: nn.Module, state_dict: dict, source: str = "state dict", assign: bool = False) -> None:
    """Strict load with a message that says what the checkpoint is and what the model is."""
    expected_stage = getattr(model, "stage", None)
    got = infer_config(state_dict)
    if expected_stage in (1, 2) and got["stage"] != expected_stage:
        raise CheckpointMismatchError(
            f"{source} is a {_stage_name(got['stage'])} checkpoint, but a {_stage_name(expected_stage)} model "
            f"was asked for; load it with {model_class(got['stage']).__name__} instead")
    own = model.state_dict()
    missing = sorted(own.keys() - state_dict.keys())
    unexpected = sorted(state_dict.keys() - own.keys())
    wrong = sorted(k for k in own.keys() & state_dict.keys() if tuple(own[k].shape) != tuple(state_dict[k].shape))
    if missing or unexpected or wrong:
        mine = model.config() if hasattr(model, "config") else {}
        diffs = [f"{k}: checkpoint {got[k]}, model {mine[k]}" for k in ("depth", "vae_ch", "n_cross", "dec_adjust")
                 if k in got and k in mine and got[k] != mine[k]]
        parts = [f"{source} does not fit the model" + (f" ({'; '.join(diffs)})" if diffs else "") + ":"]
        for name, keys in (("missing", missing), ("unexpected", unexpected), ("wrongly shaped", wrong)):
            if keys:
                parts.append(f"{len(keys)} {name} keys ({', '.join(keys[:4])}{', ...' if len(keys) > 4 else ''});")
        raise CheckpointMismatchError(" ".join(parts))
    model.load_state_dict(state_dict, strict=True, assign=assign)
    left = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if left:
        raise CheckpointMismatchError(f"{source} left {len(left)} tensors uninitialised ({', '.join(left[:4])})")


def build_from_state_dict(cls: Optional[Type[nn.Module]], config: dict, state_dict: dict,
                          source: str = "checkpoint") -> nn.Module:
    """Build ``cls`` (or the class the config's stage names) on the meta device and assign the tensors."""
    stage = int(config.get("stage", 2))
    if cls is not None and getattr(cls, "stage", stage) != stage:
        raise CheckpointMismatchError(
            f"{source} is a {_stage_name(stage)} checkpoint, but {cls.__name__} is a {_stage_name(cls.stage)} "
            f"model; load it with {model_class(stage).__name__} instead")
    cls = cls or model_class(stage)
    with torch.device("meta"):
        model = cls(**constructor_kwargs(config))
    load_weights(model, state_dict, source, assign=True)
    return model.eval()


def save_varformer(path: str | os.PathLike, model: nn.Module) -> None:
    """Write ``model`` with its config; ``.safetensors`` by extension, else a weights_only-loadable torch file."""
    path = Path(path)
    if getattr(model, "weights_precision", "fp32") != "fp32":
        raise ValueError("this model holds bf16 weights for inference (prepare_inference); checkpoints are "
                         "written from float32 weights")
    config = model.config()
    state_dict = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file
        save_file(state_dict, str(path), metadata={"format": FORMAT, "version": str(VERSION),
                                                   "varformer_config": json.dumps(config)})
    else:
        torch.save({"format": FORMAT, "version": VERSION, "config": config, "state_dict": state_dict}, str(path))


def read_varformer(path: str | os.PathLike, map_location="cpu") -> tuple[dict, dict]:
    """(config, our state dict) from our format, or converted from an official BasicSR / raw checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise WeightsNotFoundError(
            f"checkpoint {path} does not exist; the released VarFormer weights are `net_g_last.pth` from "
            f"https://huggingface.co/wsy541/VarFormer (convert with `varformer convert official net_g_last.pth "
            f"-o checkpoints/varformer_d16.pt`, or pass the file directly)")
    if path.suffix == ".safetensors":
        from safetensors import safe_open
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        if meta.get("format") != FORMAT or "varformer_config" not in meta:
            raise CheckpointMismatchError(f"{path} has no VarFormer config in its metadata")
        state_dict = {k: v.to(map_location) for k, v in read_safetensors_unmapped(path).items()}
        return json.loads(meta["varformer_config"]), state_dict
    obj = torch.load(str(path), map_location=map_location, weights_only=True)
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        if not {"config", "state_dict"} <= obj.keys():
            raise CheckpointMismatchError(f"{path}: VarFormer checkpoint without config/state_dict")
        return dict(obj["config"]), obj["state_dict"]
    from varformer.model.convert import convert_official, read_official
    return convert_official(read_official(obj, source=str(path)))


_SAFETENSORS_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
                       "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
                       "U8": torch.uint8, "BOOL": torch.bool}


def read_safetensors_unmapped(path: str | os.PathLike) -> dict:
    """A ``.safetensors`` file read into one ordinary allocation per tensor (no memory map).

    ``safetensors.torch.load_file`` maps the whole file: every tensor keeps the one mapping alive, so pages once
    read stay resident until the last tensor goes -- converting the U-Net weights to bf16 for inference would
    then keep their float32 pages as well (measured: 5.2 GiB peak instead of 3.8 at full size)."""
    out = {}
    with open(path, "rb") as fh:
        n = int.from_bytes(fh.read(8), "little")
        header = json.loads(fh.read(n))
        header.pop("__metadata__", None)
        start = 8 + n
        for name, info in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
            if info["dtype"] not in _SAFETENSORS_DTYPES:
                raise CheckpointMismatchError(f"{path}: tensor {name} has unsupported dtype {info['dtype']}")
            begin, end = info["data_offsets"]
            t = torch.empty(info["shape"], dtype=_SAFETENSORS_DTYPES[info["dtype"]])
            raw = t.reshape(-1).view(torch.uint8)  # the tensor's bytes (little-endian, as the format stores them)
            if raw.numel() != end - begin:
                raise CheckpointMismatchError(f"{path}: tensor {name} has {end - begin} bytes for shape "
                                              f"{info['shape']} {info['dtype']}")
            fh.seek(start + begin)
            if raw.numel() and fh.readinto(memoryview(raw.numpy())) != raw.numel():
                raise CheckpointMismatchError(f"{path} is truncated (tensor {name})")
            out[name] = t
    return out


def load_varformer(path: str | os.PathLike, map_location="cpu", expect_stage: Optional[int] = None,
                   **overrides) -> nn.Module:
    """Load our checkpoint (or an official one) into the model class its config names, in eval mode.
    ``expect_stage`` (1 or 2) raises a clear error on the other stage; ``overrides`` may set ``cfg`` or
    ``head_layout`` (inference settings, not architecture)."""
    config, state_dict = read_varformer(path, map_location)
    bad = set(overrides) - {"cfg", "head_layout"}
    if bad:
        raise ValueError(f"load_varformer can only override cfg and head_layout, got {sorted(bad)}")
    config = dict(config, **overrides)
    cls = model_class(expect_stage) if expect_stage is not None else None
    return build_from_state_dict(cls, config, state_dict, source=str(path))


def load_backbone_weights(model: nn.Module, vae_path=None, var_path=None, local_files_only: bool = False) -> None:
    """Official VQVAE + VAR files into ``model.vae`` / ``model.var`` (strict; missing files raise
    ``WeightsNotFoundError`` with download instructions; ``None`` searches checkpoints/ then the hub cache)."""
    from varformer.backbone import load_vae, load_var
    vae = load_vae(vae_path, ch=model.vae_ch, local_files_only=local_files_only)
    var = load_var(model.depth, var_path, vae=vae, local_files_only=local_files_only)
    device = next(model.parameters()).device
    assign = device.type == "meta"
    model.vae.load_state_dict(vae.state_dict(), strict=True, assign=assign)
    model.var.load_state_dict(var.state_dict(), strict=True, assign=assign)
