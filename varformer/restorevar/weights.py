"""Where RestoreVAR's weight files come from, and reading them (paths or state dicts).

The released files are not on a model hub: they are in the "checkpoints" archive linked from the RestoreVAR README
(a JHU SharePoint download, ``ckpts/`` once extracted). Put them in ``checkpoints/`` (or ``$VARFORMER_CHECKPOINTS``)
or pass their paths; a missing file raises ``WeightsNotFoundError`` saying which file and where to get it.

- ``restorevar.pth``: VAR d16 @ 512 + latent refiner (594 tensors);
- ``vae_restorevar.ckpt``: the VQVAE with the decoder fine-tuned on continuous latents;
- ``var_d16.pth``, ``vae_ch160v4096z32.pth``: VAR's own files (stage-1 initialisation, tokenizer), also in the
  archive and on Hugging Face ``FoundationVision/var``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Optional

import torch

from varformer.backbone.hub import VAE_FILENAME, find_local_file, read_state_dict
from varformer.errors import CheckpointMismatchError

RESTOREVAR_FILE = "restorevar.pth"
DECODER_VAE_FILE = "vae_restorevar.ckpt"
TOKENIZER_FILE = VAE_FILENAME
ARCHIVE_URL = ("https://livejohnshopkins-my.sharepoint.com/:u:/g/personal/sambasa2_jh_edu/"
               "IQBRgls-pEXOSpunUEA4j0MtAeJzsjjMRHYRUowCnKwOMKU?e=EadbiN")
WHAT = {RESTOREVAR_FILE: "the RestoreVAR transformer + refiner", DECODER_VAE_FILE: "RestoreVAR's fine-tuned VQVAE",
        TOKENIZER_FILE: "VAR's VQVAE tokenizer", "var_d16.pth": "VAR d16 (the stage-1 initialisation)"}


def download_hint(filename: str) -> str:
    where = (f"the 'checkpoints' archive of the RestoreVAR README ({ARCHIVE_URL}, JHU SharePoint; extract it and "
             f"take ckpts/{filename})")
    if filename in (TOKENIZER_FILE, "var_d16.pth"):
        where += f" or https://huggingface.co/FoundationVision/var/resolve/main/{filename}"
    return f"{WHAT.get(filename, filename)} '{filename}' comes from {where}; put it in checkpoints/ or pass its path"


def find_weight_file(filename: str, path: Optional[str | os.PathLike] = None,
                     checkpoints_dir: Optional[str | os.PathLike] = None) -> Path:
    """``path`` (a file, or a folder holding ``filename``), else ``filename`` in the checkpoint folders."""
    return find_local_file(filename, path, checkpoints_dir, download_hint(filename))


def read_weights(sd_or_path, filename: str, map_location="cpu") -> Dict[str, torch.Tensor]:
    """A plain state dict given as such, or read from a path (``torch.load(weights_only=True)``)."""
    if isinstance(sd_or_path, dict):
        bad = [k for k, v in sd_or_path.items() if not isinstance(v, torch.Tensor)]
        if bad:
            raise CheckpointMismatchError(f"expected a state dict of tensors for {filename}, but {bad[:3]} are not "
                                          "tensors (an official training checkpoint? take its "
                                          "['trainer']['var_wo_ddp'] entry)")
        return sd_or_path
    if sd_or_path is None:
        return read_state_dict(find_weight_file(filename), map_location)
    return read_state_dict(find_weight_file(filename, sd_or_path), map_location)
