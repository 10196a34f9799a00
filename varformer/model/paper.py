"""What reproducing VarFormer's paper needs from the method (``MethodSpec.paper``; ``varformer reproduce paper``):
the three released files, their conversion into our model file, and the check of the backbone files against it.

The official test script loads the VQVAE and VAR files and then the checkpoint over them; the released checkpoint
holds every tensor (the VQVAE and VAR included), and our strict conversion takes them all from it, so the two
backbone files are checked against the checkpoint instead (their architecture read from their tensors): the frozen
parts must be equal, the VAR embeddings and head may differ (the official recipe trains them).
"""
from __future__ import annotations

import re
from typing import Dict, Tuple

import torch
from torch import nn

from varformer.backbone.hub import VAE_FILENAME, VAR_REPO_ID, load_vae, load_var, read_state_dict, var_filename
from varformer.errors import CheckpointMismatchError
from varformer.methods.api import PaperSpec, ReleasedFile
from varformer.model.convert import read_official
from varformer.model.files import build_from_state_dict, convert_official
from varformer.model.settings import VarFormerSettings

RELEASE_REPO_ID = "wsy541/VarFormer"
OFFICIAL_FILENAME = "net_g_last.pth"
RELEASED_DEPTH = 16
TABLE = "varformer_paper_4task"

FILES = (ReleasedFile(VAR_REPO_ID, VAE_FILENAME, "VAR's VQVAE tokenizer"),
         ReleasedFile(VAR_REPO_ID, var_filename(RELEASED_DEPTH), f"VAR transformer, depth {RELEASED_DEPTH}"),
         ReleasedFile(RELEASE_REPO_ID, OFFICIAL_FILENAME, "released VarFormer (BasicSR checkpoint)"))


def convert_release(files: Dict[str, object]) -> Tuple[nn.Module, str]:
    """``net_g_last.pth`` -> (our model, the conversion's summary): layout inferred, strict, every tensor placed or
    dropped as inert."""
    source = str(files[OFFICIAL_FILENAME])
    arch, state_dict, report = convert_official(read_official(source), with_report=True)
    return build_from_state_dict(VarFormerSettings(**arch), state_dict, source=source), report.summary()


def count_var_blocks(sd: Dict[str, torch.Tensor]) -> int:
    return len({m.group(1) for k in sd for m in [re.match(r"blocks\.(\d+)\.", k)] if m})


def check_backbone(model: nn.Module, files: Dict[str, object]) -> Dict[str, object]:
    """Compare the checkpoint's VQVAE and VAR with the released backbone files (their width and depth read from
    their tensors): the frozen parts are expected equal, the VAR embeddings/head may be fine-tuned."""
    vae_sd = read_state_dict(files[VAE_FILENAME])
    var_file = files[var_filename(RELEASED_DEPTH)]
    var_sd = read_state_dict(var_file)
    width = int(vae_sd["encoder.conv_in.weight"].shape[0]) if "encoder.conv_in.weight" in vae_sd else None
    depth = count_var_blocks(var_sd)
    if width is None or not depth:
        raise CheckpointMismatchError(f"{files[VAE_FILENAME]} / {var_file}: not a VQVAE and a VAR file")
    vae = load_vae(files[VAE_FILENAME], ch=width)       # strict: a real VQVAE of that width
    var = load_var(depth, var_file, vae=vae)            # strict: a real VAR of that depth
    ours = model.state_dict()
    result: Dict[str, object] = {"vae_ch": width, "var_depth": depth,
                                 "checkpoint_vae_ch": model.vae_ch, "checkpoint_depth": model.depth}
    if (width, depth) != (model.vae_ch, model.depth):
        result["note"] = (f"the backbone files are VQVAE ch={width} / VAR depth {depth}, the checkpoint "
                          f"ch={model.vae_ch} / depth {model.depth}: not compared")
        return result
    groups = {"vqvae": ("vae.", vae.state_dict()),
              "var_blocks": ("var.", {k: v for k, v in var.state_dict().items() if k.startswith("blocks.")}),
              "var_embeddings_head": ("var.", {k: v for k, v in var.state_dict().items()
                                               if not k.startswith("blocks.")})}
    for name, (prefix, sd) in groups.items():
        differ = [k for k, v in sd.items() if not torch.equal(ours[prefix + k], v)]
        result[name] = {"tensors": len(sd), "differ": len(differ), "first_differing": differ[:3]}
    return result


def describe_check(check: Dict[str, object]) -> str:
    if "note" in check:
        return str(check["note"])
    parts = []
    for name, label in (("vqvae", "VQVAE"), ("var_blocks", "VAR blocks"), ("var_embeddings_head",
                                                                           "VAR embeddings/head")):
        c = check[name]
        parts.append(f"{label}: {c['tensors'] - c['differ']}/{c['tensors']} tensors equal to the released file")
    return "; ".join(parts) + " (the official recipe fine-tunes the VAR embeddings and head)"


PAPER = PaperSpec(files=FILES, source=OFFICIAL_FILENAME, convert=convert_release, check_backbone=check_backbone,
                  describe_check=describe_check, table=TABLE, protocols=("paper", "full"))
