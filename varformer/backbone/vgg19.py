"""VGG19, frozen: the feature extractor of the perceptual losses (torchvision's ``vgg19-dcbb9e9d.pth``), found in
``checkpoints/`` or torch's hub cache, never downloaded silently and never randomly initialised."""
from __future__ import annotations

import os
from typing import Dict, Optional, Sequence

import torch
from torch import nn
from torchvision.models.vgg import cfgs, make_layers

from varformer.errors import ConfigError, WeightsNotFoundError
from varformer.files import read_state_dict

VGG19_FILE = "vgg19-dcbb9e9d.pth"
VGG19_URL = "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth"
# torchvision's vgg19().features indices of each ReLU output, by the usual names
VGG19_RELU = {"relu1_1": 1, "relu1_2": 3, "relu2_1": 6, "relu2_2": 8, "relu3_1": 11, "relu3_2": 13, "relu3_3": 15,
              "relu3_4": 17, "relu4_1": 20, "relu4_2": 22, "relu4_3": 24, "relu4_4": 26, "relu5_1": 29,
              "relu5_2": 31, "relu5_3": 33, "relu5_4": 35}


def is_vgg19_state_dict(sd) -> bool:
    keys = list(sd)
    return "features.0.weight" in sd and any(str(k).startswith("classifier.") for k in keys)


# ---------------------------------------------------------------------------------------------------------------
def find_vgg19_weights(path: Optional[str] = None, search_dirs: Sequence[str] = ("checkpoints",)) -> str:
    """Resolve the VGG19 weight file: an explicit path, else ``checkpoints/``, else torch's hub cache."""
    if path:
        if not os.path.isfile(path):
            raise WeightsNotFoundError(f"VGG19 weights not found at train.loss.vgg_path={path}. Download {VGG19_URL} "
                                       f"there, or train without the perceptual term: train.loss.perceptual=0")
        return path
    candidates = [os.path.join(d, VGG19_FILE) for d in search_dirs]
    candidates.append(os.path.join(torch.hub.get_dir(), "checkpoints", VGG19_FILE))
    for c in candidates:
        if os.path.isfile(c):
            return c
    raise WeightsNotFoundError(
        f"VGG19 weights for the perceptual loss not found (looked in: {', '.join(candidates)}). Download "
        f"{VGG19_URL} into checkpoints/ (or torch's hub cache), set train.loss.vgg_path, or train without the "
        "perceptual term: train.loss.perceptual=0")


def _trunk(last: int) -> nn.Module:
    with torch.device("meta"):  # no random init: every tensor comes from the file
        return make_layers(cfgs["E"])[: last + 1]  # VGG19's conv trunk only (not the 120 M classifier)


def trunk_tensors(weights_path: str, last: int = max(VGG19_RELU.values())) -> Dict[str, torch.Tensor]:
    """The conv-trunk tensors (up to layer ``last``) of torchvision's VGG19 file, every name and shape checked:
    one line for a file that is not it (unreadable, a pickle with code, another network)."""
    sd = read_state_dict(weights_path)
    own = {k[len("features."):]: v for k, v in sd.items() if k.startswith("features.")}
    needed = _trunk(last).state_dict()
    missing = [k for k in needed if k not in own]
    wrong = [k for k in needed if k in own and tuple(own[k].shape) != tuple(needed[k].shape)]
    if missing or wrong:
        what = f"missing {missing[:4]}" if missing else f"{wrong[0]} is {tuple(own[wrong[0]].shape)}, not " \
                                                          f"{tuple(needed[wrong[0]].shape)}"
        raise WeightsNotFoundError(f"{weights_path} is not torchvision's VGG19 ({VGG19_URL}): {what}")
    return {k: own[k] for k in needed}


class VGGPerceptualLoss(nn.Module):
    """Distance between frozen VGG19 features of two [-1, 1] images (ImageNet-normalised, as torchvision's
    weights expect), at one ReLU layer (official: ``relu5_4``, L1)."""

    def __init__(self, weights_path: str, layer: str = "relu5_4", criterion: str = "l1"):
        super().__init__()
        if layer not in VGG19_RELU:
            raise ConfigError(f"train.loss.perceptual_layer '{layer}' is not a VGG19 ReLU; one of {list(VGG19_RELU)}")
        if criterion not in ("l1", "l2"):
            raise ConfigError(f"train.loss.perceptual_criterion must be 'l1' or 'l2', got '{criterion}'")
        last = VGG19_RELU[layer]
        features = _trunk(last)
        tensors = trunk_tensors(weights_path, last)
        features.load_state_dict({k: v.float() for k, v in tensors.items()}, strict=True, assign=True)
        features.requires_grad_(False).eval()
        self.features = features
        self.criterion = criterion
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True):
        super().train(mode)
        self.features.eval()  # frozen feature extractor: always in eval mode
        return self

    def _feat(self, x_pm1: torch.Tensor) -> torch.Tensor:
        return self.features(((x_pm1 + 1) * 0.5 - self.mean) / self.std)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            t = self._feat(target).float()
        p = self._feat(pred).float()
        return (p - t).abs().mean() if self.criterion == "l1" else (p - t).pow(2).mean()
