"""VARestorer's ``model:`` config section: the settings of ``VARestorerSettings`` plus where the weights come from,
the text models and their cache, and the inference options (docs/varestorer.md, "Use")."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from varformer.varestorer.settings import VARestorerSettings
from varformer.varestorer.text import BLIP_MODEL, T5_MODEL


@dataclass
class VARestorerModelConfig(VARestorerSettings):
    # the architecture fields are VARestorerSettings' (varformer/varestorer/settings.py); below: the weights
    weights: Optional[str] = None           # our model file (varformer convert varestorer)
    model_path: Optional[str] = None        # varestorer.pth; None: checkpoints/, then the Hugging Face cache / hub
    vae_path: Optional[str] = None          # infinity_vae_d32reg.pth (FoundationVision/Infinity)
    swinir_path: Optional[str] = None       # general_swinir_v1.ckpt (lxq007/DiffBIR)
    local_files_only: bool = False          # never reach the hub (weights and text models), only its cache
    # the text (varformer.varestorer.text)
    text_model: str = T5_MODEL              # prompt features: a Hugging Face name or a folder
    caption_model: str = BLIP_MODEL         # captions of the inputs when no prompt is given
    text_cache: Optional[str] = None        # the feature / caption cache; None: ~/.cache/varformer/varestorer-text
    text_device: str = "auto"               # where the text models run (auto: CUDA when available)
    text_dtype: str = "auto"                # auto: float16 on CUDA (the release), float32 elsewhere
    prompt: Optional[str] = None            # one prompt for every image; None: each input's BLIP caption (benchmarks)
    # inference
    text_drop_at_inference: float = 0.0     # the release's random text drop (D1): 0.1 there, off here
    argmax_bits: bool = False               # deterministic bits instead of the release's draws
    seed: Optional[int] = None              # torch.manual_seed(seed) before each network call; None: not reseeded
    truncate_output: bool = True            # the release's 8-bit output by truncation (D8), before blending/resizing
