"""VarFormer's config sections: ``model:`` (the settings of ``VarFormerSettings`` plus where the weights come
from), ``train.loss:`` and ``demo:``. ``varformer.config`` types a config's sections by its method's spec, so a
misspelled key fails at start-up (docs/training.md)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from varformer.methods.api import DemoKnobs
from varformer.model.settings import VarFormerSettings


@dataclass
class VarFormerModelConfig(VarFormerSettings):
    # the architecture and inference settings are VarFormerSettings' fields (varformer/model/settings.py);
    # below: where the weights come from
    vae_path: Optional[str] = None      # vae_ch160v4096z32.pth; None: checkpoints/ then the Hugging Face cache
    var_path: Optional[str] = None      # var_d{depth}.pth; None: checkpoints/ then the Hugging Face cache
    weights: Optional[str] = None       # a VarFormer checkpoint (ours or official BasicSR) to start from
    stage1_weights: Optional[str] = None  # stage 2 only: a stage-1 run's ckpt_*.pt / final_ema.pt (adapter,
                                        # cross-attention, VAR embeddings/head carried over from its EMA)
    local_files_only: bool = False      # never reach the hub, only its local cache
    random_init_backbone: bool = False  # tests/demo only: build the frozen VAR backbone with random weights, explicitly


@dataclass
class VarFormerLossConfig:
    formulation: str = "official"       # "official" (the released code) or "paper" (-PSNR + squared-L2 VGG, frozen VAR)
    pixel_l1: float = 1.0
    psnr: float = 0.5
    perceptual: float = 1.0             # 0 disables the VGG19 term (logged loudly)
    perceptual_layer: str = "relu5_4"
    perceptual_criterion: str = "l1"    # official: l1; paper: l2
    token_ce: float = 0.1
    feature_l2: float = 0.5
    vgg_path: Optional[str] = None      # vgg19-dcbb9e9d.pth; None: torch hub cache


@dataclass
class VarFormerDemoConfig(DemoKnobs):
    """The defaults are the official behaviour; the official recipes leave this section alone (docs/demo.md)."""
    input_weight_init: float = 0.5      # stage 2 from scratch: global-residual weight at init (1.0 = identity start)
    input_weight_lr_scale: float = 1.0  # lr multiplier of that weight: an identity start opens only as fast as Adam
                                        # moves it (about lr per step)
