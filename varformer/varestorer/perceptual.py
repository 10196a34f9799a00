"""LPIPS as a training loss for VARestorer's distillation: the ``lpips`` package's network (v0.1, its shipped
linear heads) with the torchvision trunk read from a local file, never downloaded; frozen, gradients pass to the
input. ``net='vgg'`` (VGG16, ``vgg16-397923af.pth``: the LPIPS of one-step SR distillation, e.g. OSEDiff) or
``net='alex'`` (AlexNet, ``alexnet-owt-7be5be79.pth``: the LPIPS of the metrics).

    lp = load_training_lpips("vgg")               # checkpoints/ or torch's hub cache, else WeightsNotFoundError
    d = lp(out_pm1, gt_pm1)                        # (B, 1, 1, 1), inputs in [-1, 1]
    lp = load_training_lpips("vgg", random_trunk=True)   # tests and the offline demo only: NOT LPIPS
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional

import torch
from torch import nn

from varformer.backbone.hub import checkpoint_dirs
from varformer.errors import ConfigError, WeightsNotFoundError
from varformer.files import read_torch_file
from varformer.metrics import lpips_with_trunk

TRUNKS = {"vgg": ("vgg16-397923af.pth", "https://download.pytorch.org/models/vgg16-397923af.pth"),
          "alex": ("alexnet-owt-7be5be79.pth", "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth")}


def trunk_search_paths(net: str) -> List[Path]:
    filename = TRUNKS[net][0]
    dirs = checkpoint_dirs() + [Path(torch.hub.get_dir()) / "checkpoints"]
    return list(dict.fromkeys(d / filename for d in dirs))


def find_trunk_weights(net: str, path: Optional[str] = None) -> Path:
    if net not in TRUNKS:
        raise ConfigError(f"LPIPS network must be one of {sorted(TRUNKS)}, got {net!r}")
    filename, url = TRUNKS[net]
    if path:
        if not os.path.isfile(path):
            raise WeightsNotFoundError(f"LPIPS ({net}) trunk weights not found at {path}; download {url}")
        return Path(path)
    for p in trunk_search_paths(net):
        if p.is_file():
            return p
    looked = ", ".join(str(p) for p in trunk_search_paths(net))
    raise WeightsNotFoundError(f"LPIPS ({net}) needs torchvision's {filename} (looked in {looked}): download {url} "
                               "into checkpoints/, set train.loss.lpips_weights, or train without LPIPS "
                               "(train.loss.lpips_weight=0)")


def load_training_lpips(net: str = "vgg", weights_path: Optional[str] = None, random_trunk: bool = False
                        ) -> nn.Module:
    """The frozen LPIPS network in train-loss form (module doc)."""
    if net not in TRUNKS:
        raise ConfigError(f"LPIPS network must be one of {sorted(TRUNKS)}, got {net!r}")
    if random_trunk:
        return lpips_with_trunk(net, None, "a random trunk")
    path = find_trunk_weights(net, weights_path)
    return lpips_with_trunk(net, read_torch_file(path), str(path))
