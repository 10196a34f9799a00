"""The one checkpoint module: model files of any method, training checkpoints, strict loading, EMA merging.

A **model file** holds one method's model: its settings (the constructor's arguments) and every tensor.

    save_model_file("final_ema.safetensors", "mynet", settings.to_metadata(), model.state_dict())
    f = open_weights(path)          # read once: safetensors header or a weights_only torch load, memory-mapped
    f.format, f.metadata            # "mynet", {"depth": 2, ...} for a model file; None for anything else
    state_dict = f.tensors()        # the model file's tensors
    strict_load(model, state_dict, path, explain=spec.architecture_of)   # keys and shapes exact, nothing on meta

Layouts (both written atomically through ``varformer.files``):
- ``.safetensors``: metadata ``{"format": NAME, "version": "1", "config": JSON settings}`` (files of version 0.1
  wrote ``NAME_config`` instead of ``config``: still read);
- any other name: ``torch.save({"format": NAME, "version": 1, "config": {...}, "state_dict": {...}})``, which
  loads with ``weights_only=True``.

A **training checkpoint** (``ckpt_*.pt``, written by ``varformer.training.checkpoint``) holds ``step``, ``model``
(what the run trained, plus buffers), ``ema`` and ``config`` (the run's resolved config as YAML);
``ema_weights`` is the weights a restorer uses: the trained tensors with their EMA over them.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Callable, Dict, List, Mapping, Optional

import torch
from torch import nn

from varformer.backbone.state_dict_check import check_filled, key_mismatch
from varformer.errors import CheckpointMismatchError, WeightsNotFoundError
from varformer.files import read_safetensors, read_torch_file, safetensors_metadata, save_safetensors_atomic
from varformer.files import save_torch_atomic

MODEL_FILE_VERSION = 1


def save_model_file(path: str | os.PathLike, method: str, settings: Mapping[str, object],
                    state_dict: Mapping[str, torch.Tensor]) -> str:
    """Write a model file (``.safetensors`` by extension, else a torch file) atomically; returns the path."""
    path = str(path)
    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    bad = [k for k, v in tensors.items() if v.is_floating_point() and torch.isnan(v).any()]  # (-inf: mask buffers)
    if bad:
        raise CheckpointMismatchError(f"refusing to write {path}: {len(bad)} tensors hold NaN (e.g. {bad[0]})")
    if path.endswith(".safetensors"):
        save_safetensors_atomic(tensors, path, metadata={"format": method, "version": str(MODEL_FILE_VERSION),
                                                         "config": json.dumps(dict(settings))})
    else:
        save_torch_atomic({"format": method, "version": MODEL_FILE_VERSION, "config": dict(settings),
                           "state_dict": tensors}, path)
    return path


@dataclass
class OpenedWeights:
    """A weights file read once: ``content`` is the torch file's object (tensors memory-mapped) or None for a
    ``.safetensors`` file, whose ``header`` metadata is read instead; ``format``/``metadata`` are set for a model
    file of this project."""
    path: str
    content: object = None
    header: Optional[Dict[str, str]] = None
    format: Optional[str] = None
    metadata: Optional[Dict[str, object]] = None

    @property
    def is_safetensors(self) -> bool:
        return self.header is not None

    def tensors(self) -> Dict[str, torch.Tensor]:
        """The tensors of a model file (read now for ``.safetensors``, without a memory map)."""
        if self.is_safetensors:
            return read_safetensors(self.path)[0]
        if self.format is None:
            raise CheckpointMismatchError(f"{self.path} is not a model file of this project")
        return self.content["state_dict"]


def open_weights(path: str | os.PathLike) -> OpenedWeights:
    """Read ``path`` once and say whether it is a model file (and of which method); every failure is one line."""
    path = str(path)
    if not os.path.isfile(path):
        raise WeightsNotFoundError(f"weights file not found: {path}")
    if path.endswith(".safetensors"):
        header = safetensors_metadata(path)
        fmt = header.get("format")
        key = "config" if "config" in header else f"{fmt}_config"  # version 0.1: "<format>_config"
        meta = None
        if fmt and key in header:
            try:
                meta = json.loads(header[key])
            except json.JSONDecodeError as e:
                raise CheckpointMismatchError(f"{path}: its '{key}' metadata is not JSON ({e})") from None
        return OpenedWeights(path, header=header, format=fmt if meta is not None else None, metadata=meta)
    obj = read_torch_file(path)
    if isinstance(obj, dict) and isinstance(obj.get("format"), str) and isinstance(obj.get("config"), dict):
        if "state_dict" not in obj:
            raise CheckpointMismatchError(f"{path}: a {obj['format']} model file without its state_dict")
        return OpenedWeights(path, obj, format=obj["format"], metadata=obj["config"])
    return OpenedWeights(path, obj)


def is_training_checkpoint(obj: object) -> bool:
    return isinstance(obj, dict) and {"step", "model", "ema"} <= obj.keys()


def ema_weights(checkpoint: Mapping[str, object]) -> Dict[str, torch.Tensor]:
    """A training checkpoint's weights for inference: what the run trained, with the EMA of each trained tensor
    over it (the trainer's EMA holds the trainable parameters; buffers come from ``model``)."""
    state = dict(checkpoint["model"])
    state.update(checkpoint["ema"])
    return state


def strict_load(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str = "state dict",
                assign: bool = False,
                explain: Optional[Callable[[Mapping[str, torch.Tensor], Mapping[str, torch.Tensor]], List[str]]] = None
                ) -> None:
    """``model.load_state_dict(state_dict, strict=True)`` after checking keys and shapes; with ``assign`` into a
    model built on the meta device, every tensor must be filled. ``explain(file_sd, model_sd)`` gives the
    architecture differences (``"depth: checkpoint 16, model 20"``) put first in the error."""
    own = model.state_dict()
    mismatch = key_mismatch(own, state_dict)
    if mismatch:
        diffs = explain(state_dict, own) if explain is not None else []
        head = f"{source} does not fit the model" + (f" ({'; '.join(diffs)})" if diffs else "") + ":"
        raise CheckpointMismatchError(" ".join([head, *mismatch]))
    model.load_state_dict(dict(state_dict), strict=True, assign=assign)
    if assign:
        check_filled(model, source)


def architecture_differences(describe: Callable[[Mapping[str, torch.Tensor]], Dict[str, object]]):
    """``explain`` for ``strict_load`` from a method's ``architecture_of`` (the fields its tensors determine)."""
    def explain(file_sd: Mapping[str, torch.Tensor], model_sd: Mapping[str, torch.Tensor]) -> List[str]:
        got, want = describe(file_sd), describe(model_sd)
        return [f"{k}: checkpoint {got[k]}, model {want.get(k)}" for k in got
                if got[k] is not None and want.get(k) is not None and got[k] != want[k]]
    return explain


def build_loaded(build: Callable[[], nn.Module], state_dict: Mapping[str, torch.Tensor], source: str,
                 explain=None) -> nn.Module:
    """``build()`` on the meta device (no random init, no memory), the tensors assigned strictly, eval mode."""
    with torch.device("meta"):
        model = build()
    strict_load(model, state_dict, source, assign=True, explain=explain)
    return model.eval()

