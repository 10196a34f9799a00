"""VARestorer as a restorer of the shared restore / evaluate path (``varformer.inference``): the model with its
text, its output as the release writes it, and the traits that make the shared path run it as the release does.

    runner = VARestorerRestorer(model, TextSource(TextOptions(prompt="a photo")))   # or captions of every input
    traits = restorer_traits(runner)        # x4, pre-upsampled by Lanczos, 512 input, resized to it (the release)
    r = model_restorer(runner, traits=traits)                # varformer.inference: (B, 3, H, W) -> (B, 3, 4H, 4W)

Text per image (``image_context``): a fixed prompt's T5 features, or the T5 features of the BLIP caption of the
input as read (the release's benchmark driver captions the raw LQ file), both through the on-disk cache
(``varformer.varestorer.text``): the text models are loaded only on a miss. The release's default ``restore``
path (``gen_one_img_anyres``, ``tiled=0``): the input resized x``scale`` (PIL Lanczos), squashed to 512x512
(Lanczos), one step, its 8-bit output (truncated, D8) resized back (Lanczos); ``--fit tile`` is its tiled path
(512 tiles, overlap 128, Gaussian window, reflect padding: ``varformer.inference.tiling``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

import torch
import torch.nn as nn

from varformer.errors import ConfigError
from varformer.methods.api import RestorerTraits
from varformer.varestorer.model import VARestorer
from varformer.varestorer.settings import VARestorerSettings
from varformer.varestorer.text import (BLIP_MODEL, T5_MODEL, BlipCaptioner, Captioner, PromptEncoder,
                                       T5PromptEncoder, TextCache, to_uint8_image)

SCALE = 4                       # the release's sr_scale (scripts/infer.sh)
TILE_OVERLAP_FRACTION = 4       # the release's overlap: 128 px of a 512 tile


@dataclass
class TextOptions:
    prompt: Optional[str] = None            # one prompt for every image; None: each input's caption
    text_model: str = T5_MODEL
    caption_model: str = BLIP_MODEL
    cache_dir: Optional[str] = None         # None: text.default_cache_dir()
    local_files_only: bool = False
    device: str = "auto"
    dtype: str = "auto"


class TextSource:
    """Per-image text features: the fixed prompt's, or each image's caption's; the encoder and captioner are
    built lazily (``encoder`` / ``captioner`` / ``cache`` may be given: tests, callers holding models)."""

    def __init__(self, options: TextOptions = TextOptions(), encoder: Optional[PromptEncoder] = None,
                 captioner: Optional[Captioner] = None, cache: Optional[TextCache] = None, use_cache: bool = True):
        self.options = options
        self.prompt = options.prompt
        self._encoder, self._captioner, self._cache = encoder, captioner, cache
        self.use_cache = use_cache          # False: cheap stand-in models (the demo), nothing written to disk
        self._fixed: Optional[torch.Tensor] = None

    def set_prompt(self, prompt: Optional[str]) -> None:
        self.prompt, self._fixed = prompt, None

    @property
    def cache(self) -> TextCache:
        if self._cache is None:
            self._cache = TextCache(self.options.cache_dir)
        return self._cache

    @property
    def encoder(self) -> PromptEncoder:
        if self._encoder is None:
            o = self.options
            self._encoder = T5PromptEncoder(o.text_model, local_files_only=o.local_files_only, device=o.device,
                                            dtype=o.dtype)
        return self._encoder

    @property
    def captioner(self) -> Captioner:
        if self._captioner is None:
            o = self.options
            self._captioner = BlipCaptioner(o.caption_model, local_files_only=o.local_files_only, device=o.device,
                                            dtype=o.dtype)
        return self._captioner

    def describe(self) -> str:
        return f"prompt {self.prompt!r}" if self.prompt is not None else "a BLIP caption of each input"

    def caption(self, image_3HW: torch.Tensor) -> str:
        img = to_uint8_image(image_3HW)
        return self.cache.captions([img], self.captioner)[0] if self.use_cache else self.captioner.caption([img])[0]

    def prompt_features(self, prompt: str) -> torch.Tensor:
        if self.use_cache:
            return self.cache.prompt_features([prompt], self.encoder)[0]
        return self.encoder.encode([prompt])[0].float()

    def features_for(self, image_3HW: torch.Tensor) -> torch.Tensor:
        """(L, C) float32 text features for one input image (3, H, W) in [0, 1], as read."""
        if self.prompt is not None:
            if self._fixed is None:
                self._fixed = self.prompt_features(self.prompt)
            return self._fixed
        return self.prompt_features(self.caption(image_3HW))


class VARestorerRestorer(nn.Module):
    """The model with its text source: ``image_context(x)`` -> text features, ``forward(x, contexts)`` -> the
    release's output (8-bit by truncation unless ``truncate_output=False``)."""

    def __init__(self, model: VARestorer, text: TextSource, argmax_bits: bool = False, seed: Optional[int] = None,
                 truncate_output: bool = True):
        super().__init__()
        self.model = model
        self.text = text
        self.argmax_bits, self.seed, self.truncate_output = argmax_bits, seed, truncate_output

    def settings(self) -> VARestorerSettings:
        return self.model.settings()

    @property
    def image_size(self) -> int:
        return self.model.image_size

    def set_prompt(self, prompt: Optional[str]) -> None:
        self.text.set_prompt(prompt)

    def image_context(self, image_3HW: torch.Tensor) -> torch.Tensor:
        return self.text.features_for(image_3HW)

    def forward(self, lq01: torch.Tensor, contexts: Sequence[torch.Tensor]) -> torch.Tensor:
        if self.seed is not None:
            torch.manual_seed(self.seed)
        out = self.model(lq01, list(contexts), argmax_bits=self.argmax_bits)
        # the release converts its output to uint8 by truncation (D8) before any blending or resizing
        return out.clamp(0, 1).mul(255).floor().div(255) if self.truncate_output else out


def restorer_traits(runner: nn.Module) -> RestorerTraits:
    """The release's way of running images (module doc); a bare ``VARestorer`` (no text source) is not a
    restorer of the shared path."""
    size = runner.image_size
    return RestorerTraits(input_size=size, scale=SCALE, upsample="lanczos", fit="resize",
                          tile_overlap=size // TILE_OVERLAP_FRACTION, tile_window="gaussian",
                          image_context=isinstance(runner, VARestorerRestorer),
                          text_prompt=isinstance(runner, VARestorerRestorer))


def text_options(section: Any) -> TextOptions:
    """The text options of a ``model:`` config section (``VARestorerModelConfig``)."""
    return TextOptions(prompt=section.prompt, text_model=section.text_model, caption_model=section.caption_model,
                       cache_dir=section.text_cache, local_files_only=section.local_files_only,
                       device=section.text_device, dtype=section.text_dtype)


def runner_from_section(model: VARestorer, section: Any) -> VARestorerRestorer:
    """The restorer of ``model`` with the inference options of a ``model:`` config section."""
    p = float(section.text_drop_at_inference)
    if not 0.0 <= p <= 1.0:
        raise ConfigError(f"model.text_drop_at_inference must be in [0, 1], got {p}")
    model.text_drop_at_inference = p
    return VARestorerRestorer(model, TextSource(text_options(section)), argmax_bits=section.argmax_bits,
                              seed=section.seed, truncate_output=section.truncate_output)
