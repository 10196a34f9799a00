"""The settings of a RestoreVAR model, in one place: what the constructor takes, what a checkpoint records, what the
``restorevar:`` section of a config sets, and what a state dict's tensors determine.

    s = RestoreVARSettings()                         # the released layout: d16, 512 px, refiner depth 12
    s = RestoreVARSettings(depth=2, vae_ch=32, patch_nums=(1, 2, 3, 4), refiner_depth=1)   # a test size
    s.constructor_kwargs(); s.to_metadata(); RestoreVARSettings.from_metadata(meta)
    architecture_of(state_dict)                      # the fields our state dict's tensors determine

``refiner_depth=0`` is the stage-1 layout (the official stage-1 VAR has no refiner); such a model decodes the
sampled ``f_hat`` directly, the paper's "w/o refiner" ablation, which the release cannot run.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional

import torch

from varformer.errors import CheckpointMismatchError, ConfigError
from varformer.methods.api import SettingsMetadata

PATCH_NUMS_512 = (1, 2, 3, 4, 6, 9, 13, 18, 24, 32)   # VAR's 512-px scales (official train.sh / test_*.sh)
HEAD_DIM = 64                                           # official: width 64 * depth, depth heads
VAE_DOWNSAMPLE = 16


@dataclass
class RestoreVARSettings(SettingsMetadata):
    depth: int = 16                     # VAR depth (released: 16)
    embed_dim: Optional[int] = None     # VAR width, 64 per head; None: 64 * depth (the official pairing)
    vae_ch: int = 160                   # VQVAE base width (official 160; tests use 32)
    patch_nums: List[int] = field(default_factory=lambda: list(PATCH_NUMS_512))
    refiner_depth: int = 12             # latent refiner layers; 0: no refiner (the stage-1 model)
    refiner_dim: int = 384
    refiner_heads: int = 6
    refiner_mlp_dim: int = 768
    separate_tokenizer: bool = False    # a second VQVAE (``tokenizer_vae``) gives the teacher-forcing tokens

    TITLE = "RestoreVAR"
    NAMES = ("depth", "embed_dim", "vae_ch", "patch_nums", "refiner_depth", "refiner_dim", "refiner_heads",
             "refiner_mlp_dim", "separate_tokenizer")

    @property
    def num_heads(self) -> int:
        return self.embed_dim // HEAD_DIM

    @property
    def image_size(self) -> int:
        return self.patch_nums[-1] * VAE_DOWNSAMPLE

    def validate(self) -> "RestoreVARSettings":
        self.patch_nums = [int(p) for p in self.patch_nums]
        if self.depth < 1:
            raise ConfigError(f"RestoreVAR depth must be >= 1, got {self.depth}")
        if self.embed_dim is None:
            self.embed_dim = HEAD_DIM * self.depth
        if self.embed_dim < HEAD_DIM or self.embed_dim % HEAD_DIM:
            raise ConfigError(f"RestoreVAR embed_dim must be a positive multiple of {HEAD_DIM} (head dim), "
                              f"got {self.embed_dim}")
        if self.vae_ch % 32:
            raise ConfigError(f"vae_ch must be a multiple of 32 (GroupNorm with 32 groups), got {self.vae_ch}")
        pn = self.patch_nums
        if len(pn) < 2 or pn[0] != 1 or any(b <= a for a, b in zip(pn, pn[1:])):
            raise ConfigError(f"patch_nums must start at 1 and increase strictly, got {pn}")
        if self.refiner_depth < 0:
            raise ConfigError(f"refiner_depth must be >= 0 (0: no refiner), got {self.refiner_depth}")
        if self.refiner_depth and (self.refiner_dim % self.refiner_heads or self.refiner_heads < 1):
            raise ConfigError(f"refiner_dim {self.refiner_dim} must be divisible by refiner_heads "
                              f"{self.refiner_heads}")
        return self

    def constructor_kwargs(self) -> Dict[str, object]:
        return {k: (tuple(getattr(self, k)) if k == "patch_nums" else getattr(self, k)) for k in self.NAMES}

    def to_metadata(self) -> Dict[str, object]:
        return {k: (list(getattr(self, k)) if k == "patch_nums" else getattr(self, k)) for k in self.NAMES}


    @classmethod
    def from_config(cls, section) -> "RestoreVARSettings":
        """The settings part of a config's ``restorevar`` section (``config.RestoreVARConfig``)."""
        return cls(**{k: (list(getattr(section, k)) if k == "patch_nums" else getattr(section, k))
                      for k in cls.NAMES}).validate()



def architecture_of(state_dict: Mapping[str, object]) -> Dict[str, Optional[object]]:
    """The settings our state dict's tensors determine (patch_nums aside: only the RoPE/mask buffers, which our
    checkpoints do not store, would tell them)."""
    keys = list(state_dict)
    blocks = {int(m.group(1)) for k in keys for m in [re.match(r"var\.blocks\.(\d+)\.", k)] if m}
    layers = {int(m.group(1)) for k in keys for m in [re.match(r"refiner\.transformer\.layers\.(\d+)\.", k)] if m}
    word = state_dict.get("var.word_embed.weight")
    conv_in = state_dict.get("vae.encoder.conv_in.weight")
    ref_in = state_dict.get("refiner.proj_in.weight")
    ref_mlp = state_dict.get("refiner.transformer.layers.0.1.net.1.weight")
    return {"depth": max(blocks) + 1 if blocks else None,
            "embed_dim": int(word.shape[0]) if word is not None else None,
            "vae_ch": int(conv_in.shape[0]) if conv_in is not None else None,
            "refiner_depth": max(layers) + 1 if layers else 0,
            "refiner_dim": int(ref_in.shape[0]) if ref_in is not None else None,
            "refiner_mlp_dim": int(ref_mlp.shape[0]) if ref_mlp is not None else None,
            "separate_tokenizer": any(k.startswith("tokenizer_vae.") for k in keys)}


def vqvae_width(vae_sd: Mapping[str, torch.Tensor], source: str) -> int:
    w = vae_sd.get("encoder.conv_in.weight")
    if w is None or "decoder.conv_out.weight" not in vae_sd or "quantize.embedding.weight" not in vae_sd:
        raise CheckpointMismatchError(f"{source} is not a VQVAE state dict (no encoder.conv_in / decoder.conv_out / "
                                      "quantize.embedding tensors)")
    return int(w.shape[0])
