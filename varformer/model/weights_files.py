"""What a weights file is, and a VarFormer model from any file a user holds.

    info = inspect_weights("runs/s2/ckpt_00010000.pt")   # read with weights_only=True, tensors memory-mapped
    info.kind, info.describe()                            # "training", "a stage-2 training checkpoint ... (step 10000)"
    model = load_model_file(path, expect_stage=2)         # a restorer from a model file, the official checkpoint
                                                          # or a training checkpoint (its EMA weights)

Kinds: ``model`` (our model file, ``checkpoint_io``), ``official`` (the released BasicSR checkpoint or an official
state dict), ``training`` (a checkpoint the trainer writes: ``step``, ``model`` = trained weights and buffers,
``ema``, ``config`` = the run's resolved config as YAML; ``varformer.training.checkpoint``), ``var`` and ``vqvae``
(the frozen backbone's files), ``vgg19`` (the perceptual loss's), ``unknown``. Every file that is none of what a
command wants gets one line saying what it is and which file to use instead.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from typing import Dict, Optional

import torch
from omegaconf import OmegaConf
from safetensors import safe_open
from torch import nn

from varformer.backbone.hub import read_torch_file
from varformer.errors import CheckpointMismatchError, WeightsNotFoundError
from varformer.model.checkpoint_io import FORMAT, build_from_state_dict, read_varformer
from varformer.model.settings import STAGE_DESCRIPTIONS, VarFormerSettings
from varformer.model.varformer import build_varformer

OFFICIAL_PREFIXES = ("Mainencoder.", "main_decoder.", "ft_layers.", "cross_attn_blocks.")


@dataclass
class WeightsFile:
    path: str
    kind: str                                   # model, official, training, var, vqvae, vgg19, unknown
    settings: Optional[VarFormerSettings] = None  # model / training: the model the file describes
    content: object = None                      # the loaded (memory-mapped) object; None for .safetensors
    step: Optional[int] = None                  # training: the step it was written at
    config: Optional[Dict] = None               # training: the run's resolved config
    detail: str = ""                            # var: the depth; unknown: example keys

    @property
    def stage(self) -> Optional[int]:
        return self.settings.stage if self.settings is not None else None

    def describe(self) -> str:
        s = self.settings
        arch = (f"VAR depth {s.depth}, width {s.vae_ch}, {s.n_cross} cross-attention blocks" if s is not None else "")
        if self.kind == "model":
            return f"a {STAGE_DESCRIPTIONS[s.stage]} model file of this project ({arch})"
        if self.kind == "training":
            return f"a stage-{s.stage} training checkpoint of this project (step {self.step}; {arch})"
        if self.kind == "official":
            return "the official VarFormer checkpoint (BasicSR layout)"
        if self.kind == "var":
            return f"a VAR transformer file ({self.detail}): a frozen backbone file, not a VarFormer checkpoint"
        if self.kind == "vqvae":
            return f"a VQVAE tokenizer file ({self.detail}): a frozen backbone file, not a VarFormer checkpoint"
        if self.kind == "restorevar":
            return self.detail
        if self.kind == "vgg19":
            return "torchvision's VGG19 weights (the perceptual loss), not a VarFormer checkpoint"
        return f"not a VarFormer checkpoint ({self.detail})"


def _training_settings(config: Dict, path: str) -> VarFormerSettings:
    model = config.get("model") or {}
    try:
        return VarFormerSettings(**{k: model[k] for k in VarFormerSettings.names() if k in model}).validate()
    except Exception as e:  # a config this version cannot read
        raise CheckpointMismatchError(f"{path}: training checkpoint with an unreadable model config ({e})") from None


def _classify_state_dict(sd: Dict[str, object]) -> tuple:
    keys = list(sd)
    if any(k.startswith(OFFICIAL_PREFIXES) for k in keys):
        return "official", ""
    blocks = {int(m.group(1)) for k in keys for m in [re.match(r"blocks\.(\d+)\.", k)] if m}
    if blocks and "word_embed.weight" in sd:
        return "var", f"depth {max(blocks) + 1}, var_d{max(blocks) + 1}.pth"
    if "encoder.conv_in.weight" in sd and any(k.startswith("quantize.") for k in keys):
        return "vqvae", f"width {sd['encoder.conv_in.weight'].shape[0]}"
    if "features.0.weight" in sd and any(k.startswith("classifier.") for k in keys):
        return "vgg19", ""
    return "unknown", f"{len(keys)} entries, e.g. {', '.join(sorted(map(str, keys))[:3])}"


def inspect_weights(path: str | os.PathLike) -> WeightsFile:
    """Read ``path`` (``weights_only=True``, tensors memory-mapped) and say what it is; an unreadable file
    (truncated, random bytes, a pickle with code) raises ``CheckpointMismatchError`` in one line."""
    path = str(path)
    if not os.path.isfile(path):
        raise WeightsNotFoundError(f"weights file not found: {path}")
    if path.endswith(".safetensors"):
        try:
            with safe_open(path, framework="pt") as f:
                meta = f.metadata() or {}
        except Exception as e:  # safetensors raises its own error types for a bad header
            raise CheckpointMismatchError(f"{path} cannot be read as a .safetensors file ({e})") from None
        if meta.get("format") == FORMAT and "varformer_config" in meta:  # the metadata only: no tensor is read
            return WeightsFile(path, "model", VarFormerSettings.from_metadata(json.loads(meta["varformer_config"]),
                                                                              path))
        return WeightsFile(path, "unknown", detail="a .safetensors file without a VarFormer config")
    obj = read_torch_file(path)
    if not isinstance(obj, dict):
        return WeightsFile(path, "unknown", content=obj, detail=f"holds a {type(obj).__name__}")
    if obj.get("format") == FORMAT and isinstance(obj.get("config"), dict):
        return WeightsFile(path, "model", VarFormerSettings.from_metadata(obj["config"], path), obj)
    if obj.get("format") == "restorevar":  # the marker of RestoreVAR's model files (varformer.restorevar)
        return WeightsFile(path, "restorevar", content=obj, detail="a RestoreVAR model file of this project")
    if {"step", "model", "ema"} <= obj.keys():
        config = OmegaConf.to_container(OmegaConf.create(obj.get("config") or "{}")) or {}
        if (config.get("model") or {}).get("method") == "restorevar":
            return WeightsFile(path, "restorevar", content=obj, step=int(obj["step"]),
                               detail="a RestoreVAR training checkpoint: use its run's final_ema.pt")
        return WeightsFile(path, "training", _training_settings(config, path), obj, int(obj["step"]), config)
    if "params" in obj or "params_ema" in obj:
        return WeightsFile(path, "official", content=obj)
    if all(isinstance(v, torch.Tensor) for v in obj.values()):
        kind, detail = _classify_state_dict(obj)
        return WeightsFile(path, kind, content=obj, detail=detail)
    return WeightsFile(path, "unknown", content=obj, detail=f"a dict with keys {', '.join(sorted(map(str, obj))[:5])}")


def not_a_restorer(info: WeightsFile) -> str:
    """The one line for a file that is not a stage-2 VarFormer: what it is and which file to use."""
    if info.stage == 1:
        return (f"{info.path} is {info.describe()}: it is not a restorer (stage 1 trains the Adapter only); train "
                f"stage 2 from it (model.stage1_weights={info.path}) and restore with that run's final_ema.pt")
    return (f"{info.path} is {info.describe()}; a restorer is a stage-2 VarFormer: a run's final_ema.pt or ckpt_*.pt, "
            f"or the released net_g_last.pth (converted with 'varformer convert official')")


def load_model_file(path: str | os.PathLike, expect_stage: Optional[int] = None) -> nn.Module:
    """A VarFormer in eval mode from our model file, the official checkpoint or a training checkpoint (its EMA
    weights; the frozen backbone from the files its config names). Another stage than ``expect_stage``, or a
    file of another kind, raises one line saying what the file is."""
    info = inspect_weights(path)
    if info.kind not in ("model", "official", "training"):
        raise CheckpointMismatchError(not_a_restorer(info) if expect_stage == 2 else
                                      f"{info.path} is {info.describe()}")
    if info.kind == "training":
        if expect_stage is not None and info.stage != expect_stage:
            raise CheckpointMismatchError(not_a_restorer(info))
        return model_from_training_checkpoint(info)
    settings, state_dict = read_varformer(path)
    info.settings = settings
    if expect_stage is not None and settings.stage != expect_stage:
        raise CheckpointMismatchError(not_a_restorer(info) if expect_stage == 2 else
                                      f"{info.path} is {info.describe()}, not a stage-{expect_stage} model")
    return build_from_state_dict(settings, state_dict, str(path), expect_stage)


def model_from_training_checkpoint(info: WeightsFile) -> nn.Module:
    """The run's model with its EMA weights. A checkpoint holds what its run trained (plus a random-init backbone,
    which exists nowhere else); the frozen rest comes from where the run took it: ``model.weights`` or the VQVAE
    and VAR files of its config."""
    ck, model_cfg = info.content, (info.config or {}).get("model") or {}
    state = dict(ck["model"])
    state.update(ck["ema"])
    with torch.device("meta"):
        model = build_varformer(info.settings)
    missing = set(model.state_dict()) - set(state)
    if missing and model_cfg.get("weights"):
        _, base = read_varformer(model_cfg["weights"])
        state = {**{k: v for k, v in base.items() if k in missing}, **state}
    elif missing and any(k.startswith(("vae.", "var.")) for k in missing):
        try:
            model.load_backbone(model_cfg.get("vae_path"), model_cfg.get("var_path"),
                                local_files_only=bool(model_cfg.get("local_files_only")))
        except WeightsNotFoundError as e:
            raise WeightsNotFoundError(
                f"{info.path} is {info.describe()}: it holds only the weights its run trained, and the frozen "
                f"VQVAE/VAR it needs are missing here ({e}); or use the run's final_ema.pt, a complete model "
                "file") from None
    model.load_state_dict(state, strict=False, assign=True)
    left = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if left:
        raise CheckpointMismatchError(
            f"{info.path} is {info.describe()}: {len(left)} frozen tensors (e.g. {left[0]}) came from a file its "
            f"run loaded (model.stage1_weights?) and are not in it; use the run's final_ema.pt, a complete model "
            "file")
    return model.eval()

