"""What ``varformer demo --method varestorer`` runs (untrained: the release's training is only reconstructed here, see
configs/demo_varestorer_distill.yaml for the same model distilled): a small random-init
VARestorer (2 blocks of width 128, 5 scales: 128x128 inputs, a BSQ-VAE of width 32, no SwinIR), deterministic
(argmax) bits and one fixed prompt whose text features are seeded random numbers (no T5 is loaded), at scale 1 on
the demo set's same-size pairs, through the shared restore / evaluate path. Its numbers show that pipeline running
(text per image, the release's resize path, 8-bit output); they are not restoration: nothing was trained and the
VAE decoder never saw an image.
"""
from __future__ import annotations

from typing import List, Sequence

import torch

from varformer.varestorer.model import VARestorer
from varformer.varestorer.restorer import TextOptions, TextSource, VARestorerRestorer
from varformer.varestorer.settings import VARestorerSettings

DEMO_SETTINGS = dict(depth=2, embed_dim=128, num_heads=2, text_channels=128, lora_rank=4, block_chunks=2,
                     patch_nums=[1, 2, 4, 6, 8], vae_base_ch=32, vae_ch_mult=[1, 2, 2, 2, 2], vae_num_res_blocks=1,
                     swinir=False)
DEMO_PROMPT = "a photograph, sharp and clean"
SUMMARY = ("VARestorer's demo is untrained: it runs a small random-init VARestorer (Infinity depth "
           "2, width 128, 128x128 inputs, no SwinIR; argmax bits; one fixed prompt with seeded random text "
           "features) at scale 1 through restore and evaluate: it shows the pipeline, not restoration")


class RandomPromptEncoder:
    """Seeded random (words + 1, channels) features per prompt: stands in for T5 where no text model may be
    loaded (the demo); the same prompt always gets the same features."""

    def __init__(self, channels: int, seed: int = 0):
        self.channels, self.seed = channels, seed
        self.identity = f"random text features {channels} seed={seed}"

    def encode(self, prompts: Sequence[str]) -> List[torch.Tensor]:
        out = []
        for p in prompts:
            g = torch.Generator().manual_seed(self.seed + sum(p.encode("utf-8")))
            out.append(torch.randn(len(p.split()) + 1, self.channels, generator=g))
        return out


def demo_model(seed: int = 0) -> VARestorerRestorer:
    """The demo's restorer model: random init from ``seed``, in eval mode, its text without a cache on disk."""
    settings = VARestorerSettings(**DEMO_SETTINGS).validate()
    torch.manual_seed(seed)
    model = VARestorer(**settings.constructor_kwargs()).eval()
    text = TextSource(TextOptions(prompt=DEMO_PROMPT), encoder=RandomPromptEncoder(settings.text_channels, seed),
                      use_cache=False)
    return VARestorerRestorer(model, text, argmax_bits=True)
