"""Where VARestorer's weight files come from, and reading them (paths or already-loaded objects).

- ``varestorer.pth``: the LoRA-injected BInfinity state dict (Hugging Face ``EvanEternal/VARestorer``, folder
  ``weights/``; also a Google Drive link in the VARestorer README);
- ``infinity_vae_d32reg.pth``: the BSQ-VAE, a dict with ``"vae"`` and ``"ema"`` state dicts (Hugging Face
  ``FoundationVision/Infinity``);
- ``general_swinir_v1.ckpt``: DiffBIR's SwinIR pre-cleaner, maybe under ``"state_dict"`` with ``module.`` prefixes
  (Hugging Face ``lxq007/DiffBIR``);
- ``infinity_2b_reg.pth``: the pre-trained Infinity-2B (``FoundationVision/Infinity``; the frozen base and the
  teacher of training, not needed at inference: its weights are inside ``varestorer.pth``).

Put them in ``checkpoints/`` (or ``$VARFORMER_CHECKPOINTS``) or pass their paths; ``locate_release_file`` also
takes them from the Hugging Face cache or downloads them (``huggingface_hub``; ``local_files_only`` forbids the
download). A missing file raises ``WeightsNotFoundError`` in one line saying which file and the ``hf download``
command. The text models (``google/flan-t5-xl``, ``Salesforce/blip-image-captioning-large``) are read by
``transformers`` from the same cache (``varformer.varestorer.text``).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional


from varformer.backbone.hub import checkpoint_dirs, find_local_file, hub_file
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


# where each file is on the Hugging Face hub: (repository, path inside it)
HUB = {VARESTORER_FILE: ("EvanEternal/VARestorer", "weights/varestorer.pth"),
       VAE_FILE: ("FoundationVision/Infinity", VAE_FILE),
       SWINIR_FILE: ("lxq007/DiffBIR", SWINIR_FILE),
       INFINITY_FILE: ("FoundationVision/Infinity", INFINITY_FILE)}


def hub_command(filename: str) -> str:
    repo, path = HUB[filename]
    return f"hf download {repo} {path} --local-dir checkpoints"


def download_hint(filename: str) -> str:
    what, url = SOURCES.get(filename, (filename, "its release"))
    return f"{what} '{filename}' comes from {url}; put it in checkpoints/ or pass its path"


def find_weight_file(filename: str, path: Optional[str | os.PathLike] = None,
                     checkpoints_dir: Optional[str | os.PathLike] = None) -> Path:
    """``path`` (a file, or a folder holding ``filename``), else ``filename`` in the checkpoint folders."""
    return find_local_file(filename, path, checkpoints_dir, download_hint(filename))


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


def locate_release_file(filename: str, path: Optional[str | os.PathLike] = None, local_files_only: bool = False,
                        checkpoints_dir: Optional[str | os.PathLike] = None) -> Path:
    """A released file: ``path`` (a file or a folder holding it) if given, else the checkpoint folders, else the
    Hugging Face cache or a download (``huggingface_hub``; ``local_files_only``: the cache only). One
    ``WeightsNotFoundError`` line when none has it."""
    if path is not None:
        return find_weight_file(filename, path)
    repo, repo_path = HUB[filename]
    for d in checkpoint_dirs(checkpoints_dir):
        for name in dict.fromkeys((filename, repo_path)):  # hf download --local-dir keeps the repository's folders
            if (d / name).is_file():
                return d / name
    try:
        return hub_file(repo, repo_path, local_files_only)
    except Exception as exc:  # offline, cache miss, missing repo or file, network error: all mean "not available"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        where = "in the Hugging Face cache (offline)" if local_files_only else "from the Hugging Face hub"
        dirs = ", ".join(str(d) for d in checkpoint_dirs(checkpoints_dir))
        raise WeightsNotFoundError(
            f"{filename} ({SOURCES[filename][0]}) is not in {dirs} and not available {where} "
            f"({type(exc).__name__}: {first}); download it with `{hub_command(filename)}` or pass its path") from None
