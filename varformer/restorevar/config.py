"""RestoreVAR's config sections: ``model:`` (the settings of ``RestoreVARSettings`` plus where the weights come
from and its training knobs) and ``train.loss:``. Configs of version 0.1 held this section as ``restorevar:`` with
``model.method: restorevar``; ``varformer.config`` still reads them (docs/restorevar.md)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from varformer.restorevar.settings import RestoreVARSettings


@dataclass
class RestoreVARModelConfig(RestoreVARSettings):
    # the architecture fields are RestoreVARSettings' (varformer/restorevar/settings.py); below: where the weights
    # come from (docs/restorevar.md) and the training knobs
    var_path: Optional[str] = None          # var_d{depth}.pth: stage-1 initialisation; None: checkpoints/, then the hub
    vae_path: Optional[str] = None          # vae_ch160v4096z32.pth: the tokenizer (stage 1)
    decoder_vae_path: Optional[str] = None  # vae_restorevar.ckpt (stage 2, inference); None: vae_path's VQVAE
    weights: Optional[str] = None           # a RestoreVAR checkpoint of ours to start from (every tensor)
    stage1_weights: Optional[str] = None    # stage 2: a stage-1 run's ckpt_*.pt or final_ema.pt
    local_files_only: bool = False          # VAR's own files: never reach the hub, only its cache
    random_init_backbone: bool = False      # tests/demo only: random VQVAE and VAR, explicitly
    drop_path_rate: Optional[float] = None  # stage 1; None: the official 0.1 * depth / 24
    rollout_drop_path: bool = False         # stage 2: sample with drop path on, as the release does (a quirk)
    decoder_perceptual: float = 0.0         # decoder fine-tuning (not the authors' code): VGG19 term weight


@dataclass
class RestoreVARLossConfig:
    vgg_path: Optional[str] = None          # vgg19-dcbb9e9d.pth for decoder fine-tuning's perceptual term
