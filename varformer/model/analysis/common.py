"""What VarFormer's analyses share: the model and images of a run, VAR's own next-scale prediction, the options.

``--var FILE``: the pretrained VAR (``var_d16.pth``) whose prediction the paper's Figure 1 analyses. Without it the
VAR inside the weights is used: its transformer blocks are the pretrained ones (frozen in every stage), its
embeddings and head as the weights hold them (the official recipe fine-tunes those); the output says which.
VAR is conditioned on the null class, as VarFormer conditions it.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import List, Optional, Tuple

import torch
from torch import nn

from varformer.backbone.hub import load_var, read_state_dict
from varformer.backbone.var import VAR
from varformer.errors import ConfigError
from varformer.methods.api import WeightsFile
from varformer.methods.figures import TaskImages, images_per_task
from varformer.model.files import model_from_file
from varformer.model.paper import count_var_blocks
from varformer.runtime import resolve_device

SIZE = 256
PATCH_NUMS = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)


def add_var_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--var", default=None, metavar="FILE",
                        help="the pretrained VAR file (var_d16.pth) whose prediction is analysed (the paper's "
                             "claim is about VAR itself); default: the VAR inside --weights (pretrained blocks, "
                             "embeddings and head as the weights hold them)")


@dataclass
class AnalysisInputs:
    model: nn.Module                 # float32, eval mode, on ``device``
    tasks: List[TaskImages]
    device: torch.device
    lines: List[str]                 # what was loaded, for the output


def prepare(args, info: WeightsFile) -> AnalysisInputs:
    """The model of ``--weights`` (any stage) on the device and the image pairs per task."""
    device = resolve_device(args.device)
    model = model_from_file(info).to(device).eval()
    tasks = images_per_task(args.root, args.benchmarks, args.max_images, SIZE)
    lines = [f"weights: {info.path} ({info.describe()})",
             "images per task: " + ", ".join(f"{t.task} {len(t.names)}" for t in tasks)]
    return AnalysisInputs(model, tasks, device, lines)


def analysed_var(model: nn.Module, var_path: Optional[str], device: torch.device) -> Tuple[VAR, str]:
    """(the VAR whose own prediction is analysed, a phrase saying which one it is)."""
    if var_path is None:
        if getattr(model, "var", None) is None:
            raise ConfigError("these weights have no VAR (ablation prior=none): pass the pretrained VAR with --var")
        return model.var, ("the VAR inside the weights (pretrained blocks; embeddings/head as the weights hold them: "
                           "pass --var var_d16.pth for the pretrained VAR itself)")
    depth = count_var_blocks(read_state_dict(var_path))
    if not depth:
        raise ConfigError(f"--var {var_path}: not a VAR transformer file (no blocks.*)")
    var = load_var(depth, var_path, vae=model.vae).to(device).eval()
    return var, f"the pretrained VAR {var_path} (depth {depth})"


def next_scale_prediction(var: VAR, idx: List[torch.Tensor]) -> List[torch.Tensor]:
    """VAR's prediction of every scale of an image from the image's own coarser scales (teacher forcing: one pass,
    the null class, argmax): 10 index maps (B, pn^2). Scale 1x1 is predicted from the class token alone."""
    B = idx[0].shape[0]
    label = torch.full((B,), var.num_classes, dtype=torch.long, device=idx[0].device)
    with torch.inference_mode():
        logits = var(label, var.vae.indices_to_var_input(idx))
    return [logits[:, b:e].argmax(-1) for b, e in var.begin_ends]


def tokens_of(vae, x01: torch.Tensor) -> List[torch.Tensor]:
    """The frozen tokenizer's ten index maps of images in [0, 1]."""
    with torch.inference_mode():
        return vae.img_to_indices(x01 * 2 - 1)


def decode(vae, idx: List[torch.Tensor]) -> torch.Tensor:
    """Index maps -> images in [0, 1]."""
    with torch.inference_mode():
        return vae.indices_to_img(idx).add(1).mul(0.5)


def fhat_of(vae, idx: List[torch.Tensor]) -> torch.Tensor:
    """VAR's latent f_hat (B, 32, 16, 16) of index maps: the sum of the ten scales' contributions."""
    with torch.inference_mode():
        return vae.indices_to_fhat(idx)[-1]
