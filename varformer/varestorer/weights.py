"""Where VARestorer's weight files come from, and reading them (paths or already-loaded objects).

- ``varestorer.pth``: the LoRA-injected BInfinity state dict (Hugging Face ``EvanEternal/VARestorer``, folder
  ``weights/``; also a Google Drive link in the VARestorer README);
- ``infinity_vae_d32reg.pth``: the BSQ-VAE, a dict with ``"vae"`` and ``"ema"`` state dicts (Hugging Face
  ``FoundationVision/Infinity``);
- ``general_swinir_v1.ckpt``: DiffBIR's SwinIR pre-cleaner, maybe under ``"state_dict"`` with ``module.`` prefixes
  (Hugging Face ``lxq007/DiffBIR``);
- ``infinity_2b_reg.pth``: the pre-trained Infinity-2B (``FoundationVision/Infinity``; the frozen base and the
  teacher of training, not needed at inference: its weights are inside ``varestorer.pth``).

Put them in ``checkpoints/`` (or ``$VARFORMER_CHECKPOINTS``) or pass their paths; a missing file raises
``WeightsNotFoundError`` saying which file and where to get it.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from varformer.backbone.hub import checkpoint_dirs
from varformer.files import read_torch_file
from varformer.errors import CheckpointMismatchError, WeightsNotFoundError

VARESTORER_FILE = "varestorer.pth"
VAE_FILE = "infinity_vae_d32reg.pth"
SWINIR_FILE = "general_swinir_v1.ckpt"
INFINITY_FILE = "infinity_2b_reg.pth"
SOURCES = {VARESTORER_FILE: ("VARestorer's LoRA-injected Infinity-2B",
                             "https://huggingface.co/EvanEternal/VARestorer (weights/varestorer.pth)"),
           VAE_FILE: ("Infinity's BSQ-VAE (d32)",
                      "https://huggingface.co/FoundationVision/Infinity/resolve/main/infinity_vae_d32reg.pth"),
           SWINIR_FILE: ("DiffBIR's SwinIR pre-cleaner",
                         "https://huggingface.co/lxq007/DiffBIR/resolve/main/general_swinir_v1.ckpt"),
           INFINITY_FILE: ("the pre-trained Infinity-2B",
                           "https://huggingface.co/FoundationVision/Infinity/resolve/main/infinity_2b_reg.pth")}


def download_hint(filename: str) -> str:
    what, url = SOURCES.get(filename, (filename, "its release"))
    return f"{what} '{filename}' comes from {url}; put it in checkpoints/ or pass its path"


def find_weight_file(filename: str, path: Optional[str | os.PathLike] = None,
                     checkpoints_dir: Optional[str | os.PathLike] = None) -> Path:
    """``path`` (a file, or a folder holding ``filename``), else ``filename`` in the checkpoint folders."""
    if path is not None:
        p = Path(path).expanduser()
        if p.is_dir():
            p = p / filename
        if p.is_file():
            return p
        raise WeightsNotFoundError(f"{p} does not exist; {download_hint(filename)}")
    dirs = checkpoint_dirs(checkpoints_dir)
    for d in dirs:
        if (d / filename).is_file():
            return d / filename
    raise WeightsNotFoundError(f"{filename} not found in {', '.join(str(d) for d in dirs)}; "
                               f"{download_hint(filename)}")


def read_weights(obj_or_path, filename: str, map_location="cpu"):
    """(the object — a state dict or a wrapper dict — given or read with ``torch.load(weights_only=True)``, a name
    of its source for messages). ``None`` looks for ``filename`` in the checkpoint folders."""
    if isinstance(obj_or_path, dict):
        return obj_or_path, f"the {filename} state dict"
    if obj_or_path is not None and not isinstance(obj_or_path, (str, os.PathLike)):
        raise CheckpointMismatchError(f"{filename}: expected a state dict or a path, got "
                                      f"{type(obj_or_path).__name__}")
    file = find_weight_file(filename, obj_or_path)
    return read_torch_file(file, map_location), str(file)
