"""The settings of a VARestorer model, in one place: what the constructor takes, what a checkpoint records and what
the official files' tensors determine.

    s = VARestorerSettings()                      # the release: Infinity-2B + LoRA 32, BSQ-VAE d32, SwinIR, 512 px
    s = VARestorerSettings(depth=2, embed_dim=128, num_heads=2, text_channels=128, lora_rank=4, block_chunks=2,
                           patch_nums=[1, 2, 4, 6, 8], vae_base_ch=32, ...).validate()     # a test size (128 px)
    s.constructor_kwargs(); s.to_metadata(); VARestorerSettings.from_metadata(meta)

``patch_nums`` is a prefix of Infinity's 1M schedule (the release: its first 10 scales, 512 px); the image side is
``16 * patch_nums[-1]``. ``lora_rank=0`` is the plain Infinity (no adapters, the pre-trained value bias kept).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List

from varformer.backbone.infinity.rope2d import SCHEDULE_025M, SCHEDULE_1M
from varformer.errors import ConfigError
from varformer.methods.api import SettingsMetadata

LIST_FIELDS = ("patch_nums", "vae_ch_mult", "swinir_depths", "swinir_num_heads")


@dataclass
class VARestorerSettings(SettingsMetadata):
    depth: int = 32                      # transformer blocks
    embed_dim: int = 2048                # transformer width
    num_heads: int = 16
    text_channels: int = 2048            # T5 feature width (Flan-T5-XL)
    text_maxlen: int = 512               # rows of cfg_uncond (the null text)
    lora_rank: int = 32                  # LoRA on the 5 attention linears of every block; 0: none
    block_chunks: int = 8                # official key layout block_chunks.{i}.module.{j} (1: blocks.{k})
    codebook_dim: int = 32               # BSQ bits per token = VAE latent channels
    patch_nums: List[int] = field(default_factory=lambda: list(SCHEDULE_025M))
    vae_base_ch: int = 128
    vae_ch_mult: List[int] = field(default_factory=lambda: [1, 2, 4, 4, 4])
    vae_num_res_blocks: int = 2
    swinir: bool = True                  # DiffBIR's SwinIR pre-cleans the input (the release); False: none
    swinir_embed_dim: int = 180
    swinir_depths: List[int] = field(default_factory=lambda: [6] * 8)
    swinir_num_heads: List[int] = field(default_factory=lambda: [6] * 8)
    swinir_window: int = 8
    swinir_mlp_ratio: float = 2.0
    swinir_num_feat: int = 64

    TITLE = "VARestorer"
    NAMES = ("depth", "embed_dim", "num_heads", "text_channels", "text_maxlen", "lora_rank", "block_chunks",
             "codebook_dim", "patch_nums", "vae_base_ch", "vae_ch_mult", "vae_num_res_blocks", "swinir",
             "swinir_embed_dim", "swinir_depths", "swinir_num_heads", "swinir_window", "swinir_mlp_ratio",
             "swinir_num_feat")

    @property
    def image_size(self) -> int:
        return 16 * self.patch_nums[-1]

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    def validate(self) -> "VARestorerSettings":
        for name in LIST_FIELDS:
            setattr(self, name, [int(v) for v in getattr(self, name)])
        if self.depth < 1 or self.block_chunks < 1 or self.depth % self.block_chunks:
            raise ConfigError(f"depth {self.depth} must be a positive multiple of block_chunks {self.block_chunks}")
        if self.num_heads < 1 or self.embed_dim % self.num_heads or self.head_dim % 4:
            raise ConfigError(f"embed_dim {self.embed_dim} must split into {self.num_heads} heads of a width "
                              "divisible by 4 (2-D RoPE)")
        if self.text_channels < 128 or self.text_channels % 128 or self.embed_dim % (self.text_channels // 128):
            raise ConfigError(f"text_channels {self.text_channels} must be a multiple of 128 whose number of "
                              f"128s (the text pool's heads) divides embed_dim {self.embed_dim}")
        if self.embed_dim > 4096:
            raise ConfigError("embed_dim above 4096 (the official 64-wide text-pool heads) is not supported")
        if self.lora_rank < 0 or self.text_maxlen < 1 or self.codebook_dim < 1:
            raise ConfigError(f"lora_rank >= 0, text_maxlen >= 1, codebook_dim >= 1 required, got {self.lora_rank}, "
                              f"{self.text_maxlen}, {self.codebook_dim}")
        pn = tuple(self.patch_nums)
        if len(pn) < 2 or pn != SCHEDULE_1M[:len(pn)] or len(pn) >= len(SCHEDULE_1M):
            raise ConfigError(f"patch_nums must be a prefix of Infinity's 1M schedule {list(SCHEDULE_1M)} with 2 to "
                              f"{len(SCHEDULE_1M) - 1} scales, got {list(pn)}")
        if len(self.vae_ch_mult) != 5 or self.vae_num_res_blocks < 1:
            raise ConfigError(f"the BSQ-VAE downsamples by 16: vae_ch_mult needs 5 levels, got {self.vae_ch_mult}")
        if any((self.vae_base_ch * m) % 32 and (self.vae_base_ch * m) % 24 for m in self.vae_ch_mult):
            raise ConfigError(f"BSQ-VAE widths (vae_base_ch x vae_ch_mult) must be multiples of 32 (or 24), got "
                              f"{[self.vae_base_ch * m for m in self.vae_ch_mult]}")
        if self.swinir:
            if len(self.swinir_depths) != len(self.swinir_num_heads) or not self.swinir_depths:
                raise ConfigError(f"swinir_depths {self.swinir_depths} and swinir_num_heads "
                                  f"{self.swinir_num_heads} must have one entry per residual group")
            if any(self.swinir_embed_dim % h for h in self.swinir_num_heads):
                raise ConfigError(f"swinir_embed_dim {self.swinir_embed_dim} must divide by every head count "
                                  f"{self.swinir_num_heads}")
            if self.image_size % (8 * self.swinir_window):
                raise ConfigError(f"SwinIR (unshuffle 8, window {self.swinir_window}) needs the image side "
                                  f"{self.image_size} to be a multiple of {8 * self.swinir_window}")
        return self

    def constructor_kwargs(self) -> Dict[str, object]:
        return {k: (list(getattr(self, k)) if k in LIST_FIELDS else getattr(self, k)) for k in self.NAMES}

    def to_metadata(self) -> Dict[str, object]:
        return self.constructor_kwargs()



    def transformer_kwargs(self) -> Dict[str, object]:
        return dict(depth=self.depth, embed_dim=self.embed_dim, num_heads=self.num_heads,
                    text_channels=self.text_channels, text_maxlen=self.text_maxlen, block_chunks=self.block_chunks,
                    codebook_dim=self.codebook_dim, patch_nums=tuple(self.patch_nums))

    def vae_kwargs(self) -> Dict[str, object]:
        return dict(base_ch=self.vae_base_ch, ch_mult=tuple(self.vae_ch_mult), num_res_blocks=self.vae_num_res_blocks,
                    z_channels=self.codebook_dim)

    def swinir_kwargs(self) -> Dict[str, object]:
        return dict(embed_dim=self.swinir_embed_dim, depths=list(self.swinir_depths),
                    num_heads=list(self.swinir_num_heads), window=self.swinir_window,
                    mlp_ratio=self.swinir_mlp_ratio, unshuffle_scale=8, num_feat=self.swinir_num_feat)
