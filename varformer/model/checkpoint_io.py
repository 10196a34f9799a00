"""Our model checkpoint format, and loading any VarFormer weights file into the right model class.

Format (``torch.save``, loadable with ``torch.load(weights_only=True)``)::

    {"format": "varformer", "version": 1,
     "config": {"stage": 2, "depth": 16, "vae_ch": 160, "n_cross": 8, "dec_adjust": False, "cfg": 0.5,
                "head_layout": "official"},          # VarFormerSettings.to_metadata()
     "state_dict": {...}}

or a ``.safetensors`` file with the same config as JSON in its metadata (key ``varformer_config``).
``load_varformer`` also accepts the official BasicSR checkpoint (``params_ema``) and converts it on the fly;
``load_official`` builds a model from the official checkpoint (or a state dict in its layout).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Dict, Optional, Tuple

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from varformer.backbone.hub import read_torch_file
from varformer.errors import CheckpointMismatchError, WeightsNotFoundError
from varformer.model.convert import infer_official_layout, map_official, read_official
from varformer.model.settings import STAGE_CLASSES, STAGE_DESCRIPTIONS, VarFormerSettings
from varformer.model.strict_load import load_weights
from varformer.model.varformer import build_varformer

FORMAT = "varformer"
VERSION = 1


def convert_official(sd: Dict[str, torch.Tensor], with_report: bool = False):
    """Official state dict -> (architecture dict, our state dict) [, ``ConversionReport``]: strict, every tensor
    placed or dropped as inert, every tensor of a model of the inferred layout filled with the right shape."""
    arch = infer_official_layout(sd)
    with torch.device("meta"):
        model = build_varformer(VarFormerSettings(**arch))
    return map_official(sd, {k: t.shape for k, t in model.state_dict().items()}, with_report=with_report)


def build_from_state_dict(settings: VarFormerSettings, state_dict: dict, source: str = "checkpoint",
                          expect_stage: Optional[int] = None) -> nn.Module:
    """The model of ``settings`` built on the meta device with the tensors assigned (strict), in eval mode.
    ``expect_stage`` (1 or 2) refuses the other stage with a message naming both."""
    if expect_stage is not None and settings.stage != expect_stage:
        raise CheckpointMismatchError(
            f"{source} is a {STAGE_DESCRIPTIONS[settings.stage]} checkpoint, but a {STAGE_DESCRIPTIONS[expect_stage]} "
            f"model was asked for; load it with {STAGE_CLASSES[settings.stage]} instead")
    with torch.device("meta"):
        model = build_varformer(settings)
    load_weights(model, state_dict, source, assign=True)
    return model.eval()


def save_varformer(path: str | os.PathLike, model: nn.Module) -> None:
    """Write ``model`` with its config; ``.safetensors`` by extension, else a weights_only-loadable torch file."""
    path = Path(path)
    if getattr(model, "weights_precision", "fp32") != "fp32":
        raise ValueError("this model holds bf16 weights for inference (prepare_inference); checkpoints are "
                         "written from float32 weights")
    config = model.settings().to_metadata()
    state_dict = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        save_file(state_dict, str(path), metadata={"format": FORMAT, "version": str(VERSION),
                                                   "varformer_config": json.dumps(config)})
    else:
        torch.save({"format": FORMAT, "version": VERSION, "config": config, "state_dict": state_dict}, str(path))


def read_varformer(path: str | os.PathLike, map_location="cpu") -> Tuple[VarFormerSettings, Dict[str, torch.Tensor]]:
    """(settings, our state dict) from our format, or converted from an official BasicSR / raw checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise WeightsNotFoundError(
            f"checkpoint {path} does not exist; the released VarFormer weights are `net_g_last.pth` from "
            f"https://huggingface.co/wsy541/VarFormer (convert with `varformer convert official net_g_last.pth "
            f"-o checkpoints/varformer_d16.pt`, or pass the file directly)")
    if path.suffix == ".safetensors":
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        if meta.get("format") != FORMAT or "varformer_config" not in meta:
            raise CheckpointMismatchError(f"{path} has no VarFormer config in its metadata")
        state_dict = {k: v.to(map_location) for k, v in read_safetensors_unmapped(path).items()}
        return VarFormerSettings.from_metadata(json.loads(meta["varformer_config"]), str(path)), state_dict
    obj = read_torch_file(path, map_location)
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        if not {"config", "state_dict"} <= obj.keys():
            raise CheckpointMismatchError(f"{path}: VarFormer checkpoint without config/state_dict")
        return VarFormerSettings.from_metadata(obj["config"], str(path)), obj["state_dict"]
    arch, state_dict = convert_official(read_official(obj, source=str(path)))
    return VarFormerSettings(**arch), state_dict


_SAFETENSORS_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
                       "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
                       "U8": torch.uint8, "BOOL": torch.bool}


def read_safetensors_unmapped(path: str | os.PathLike) -> dict:
    """A ``.safetensors`` file read into one ordinary allocation per tensor (no memory map).

    ``safetensors.torch.load_file`` maps the whole file: every tensor keeps the one mapping alive, so pages once
    read stay resident until the last tensor goes -- converting the U-Net weights to bf16 for inference would
    then keep their float32 pages as well (docs/precision.md has the measured peaks)."""
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
    """Load our checkpoint (or an official one) into the model class its settings name, in eval mode.
    ``expect_stage`` (1 or 2) raises a clear error on the other stage; ``overrides`` may set the inference
    settings ``cfg`` or ``head_layout`` (not the architecture, which the tensors fix)."""
    settings, state_dict = read_varformer(path, map_location)
    bad = set(overrides) - set(VarFormerSettings.INFERENCE)
    if bad:
        raise ValueError(f"load_varformer can only override {', '.join(VarFormerSettings.INFERENCE)}, "
                         f"got {sorted(bad)}")
    return build_from_state_dict(settings.replace(**overrides), state_dict, str(path), expect_stage)


def load_official(path_or_state_dict, key: Optional[str] = None, cfg: float = 0.5, head_layout: str = "official",
                  expect_stage: Optional[int] = None, map_location="cpu") -> nn.Module:
    """A model from the released BasicSR checkpoint (``params_ema`` unless ``key`` says otherwise), a raw official
    state dict, or a file holding one; the layout is inferred from the tensors, the load is strict."""
    source = str(path_or_state_dict) if isinstance(path_or_state_dict, (str, os.PathLike)) else "official state dict"
    arch, state_dict = convert_official(read_official(path_or_state_dict, key=key, map_location=map_location))
    settings = VarFormerSettings(**arch, cfg=cfg, head_layout=head_layout)
    return build_from_state_dict(settings, state_dict, source, expect_stage)
