"""Our RestoreVAR checkpoint format, and telling it apart from the other weight files of the project.

Format (``torch.save``, loadable with ``torch.load(weights_only=True)``)::

    {"format": "restorevar", "version": 1,
     "config": {"depth": 16, "embed_dim": 1024, "vae_ch": 160, "patch_nums": [1, 2, ..., 32], "refiner_depth": 12,
                ...},                                  # RestoreVARSettings.to_metadata()
     "state_dict": {"var.*", "refiner.*", "vae.*" [, "tokenizer_vae.*"]}}

    save_restorevar("checkpoints/restorevar.pt", model)
    model = load_restorevar("checkpoints/restorevar.pt")             # eval mode, strict
    checkpoint_format("checkpoints/restorevar.pt")                   # "restorevar", "varformer" or "other"
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Optional, Tuple

import torch

from varformer.errors import CheckpointMismatchError, WeightsNotFoundError
from varformer.restorevar.model import RestoreVAR
from varformer.restorevar.settings import RestoreVARSettings
from varformer.restorevar.strict_load import load_checked
from varformer.restorevar.weights import ARCHIVE_URL

FORMAT = "restorevar"
VERSION = 1


def save_restorevar(path: str | os.PathLike, model: RestoreVAR) -> None:
    """Write ``model`` with its settings (atomically: a temporary file renamed into place)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state_dict = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"format": FORMAT, "version": VERSION, "config": model.settings().to_metadata(),
                "state_dict": state_dict}, str(tmp))
    os.replace(tmp, path)


def checkpoint_format(path: str | os.PathLike) -> str:
    """``"restorevar"`` or ``"varformer"`` for our checkpoints (by their marker), ``"other"`` for anything else
    (an official file, a safetensors file, ...). The file is memory-mapped, not read."""
    path = Path(path)
    if path.suffix == ".safetensors" or not path.is_file():
        return "other"
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # legacy (non-zip) files, foreign pickles: not ours either way
        return "other"
    fmt = obj.get("format") if isinstance(obj, dict) else None
    return fmt if fmt in (FORMAT, "varformer") else "other"


def read_restorevar(path: str | os.PathLike, map_location="cpu") -> Tuple[RestoreVARSettings,
                                                                          Dict[str, torch.Tensor]]:
    path = Path(path)
    if not path.is_file():
        raise WeightsNotFoundError(
            f"RestoreVAR checkpoint {path} does not exist; convert the released files (restorevar.pth and "
            f"vae_restorevar.ckpt from the RestoreVAR README's checkpoints archive, {ARCHIVE_URL}) with "
            f"`varformer convert restorevar checkpoints/restorevar.pth --vae checkpoints/vae_restorevar.ckpt "
            f"-o checkpoints/restorevar.pt`, or train one (configs/restorevar_stage1.yaml, restorevar_stage2.yaml)")
    obj = torch.load(str(path), map_location=map_location, weights_only=True)
    if not (isinstance(obj, dict) and obj.get("format") == FORMAT):
        raise CheckpointMismatchError(f"{path} is not a RestoreVAR checkpoint of this project (no "
                                      f"'format': '{FORMAT}' marker); official files go through "
                                      "`varformer convert restorevar`")
    if not {"config", "state_dict"} <= obj.keys():
        raise CheckpointMismatchError(f"{path}: RestoreVAR checkpoint without config/state_dict")
    return RestoreVARSettings.from_metadata(obj["config"], str(path)), obj["state_dict"]


def build_restorevar(settings: RestoreVARSettings, state_dict: Dict[str, torch.Tensor],
                     source: str = "state dict") -> RestoreVAR:
    """The model of ``settings`` built on the meta device with the tensors assigned (strict), in eval mode."""
    with torch.device("meta"):
        model = RestoreVAR(**settings.constructor_kwargs())
    load_checked(model, state_dict, source, assign=True)
    return model.eval()


def load_restorevar(path: str | os.PathLike, map_location="cpu", expect_refiner: Optional[bool] = None
                    ) -> RestoreVAR:
    """Our checkpoint as a model (strict, eval mode); ``expect_refiner`` refuses a stage-1 (or full) model."""
    settings, state_dict = read_restorevar(path, map_location)
    if expect_refiner is not None and bool(settings.refiner_depth) != expect_refiner:
        have = "a stage-1 RestoreVAR (no refiner)" if not settings.refiner_depth else "a RestoreVAR with a refiner"
        raise CheckpointMismatchError(f"{path} is {have}; expected "
                                      + ("one with a refiner" if expect_refiner else "a stage-1 model"))
    return build_restorevar(settings, state_dict, str(path))
