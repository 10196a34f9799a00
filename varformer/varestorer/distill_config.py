"""``train.loss:`` of VARestorer: everything the distillation stage (``varformer train distill``) adds to a run --
the losses and their weights, the teacher's settings, the paper's ablations, the text, the data pipeline and the
frozen weights' sources. The release has no training code (docs/varestorer.md, "Training (reconstructed)"): every
default below that the release does not fix is marked UNKNOWN with what we chose and why.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from varformer.data.sr_degradations import SRDegradationSettings
from varformer.errors import ConfigError
from varformer.varestorer.distill_losses import REDUCTIONS

BIT_LOSSES = ("kl", "ce", "none")
TEACHER_TEXTS = ("caption", "null")
TEXT_ENCODERS = ("t5", "random")
CAPTION_SOURCES = ("jsonl", "fixed")
FROZEN_DTYPES = ("bf16", "fp32")


@dataclass
class VARestorerDistillConfig:
    # ---- the bit loss (the paper's ablations) ----------------------------------------------------------------
    bit_loss: str = "kl"                  # kl: KL(teacher || student) per bit, the method. ce: cross-entropy on the
                                          # HQ image's own bits, no teacher ("w/o distill": UNKNOWN which variant the
                                          # paper trained; a one-step CE student is the one that fits a one-step
                                          # table). none: pixel losses only ("w/o L_KL")
    bit_loss_weight: float = 1.0          # UNKNOWN; 1: the bit loss at Infinity's own cross-entropy scale
    bit_loss_reduction: str = "mean"      # UNKNOWN: mean over tokens and bits of all scales (Infinity's CE
                                          # reduction, so weight 1 keeps its scale); sum: the formula literally
                                          # (per image); scale_mean: mean per scale, summed over the scales
    cross_scale_attention: bool = True    # False: block-causal student ("w/o cross-scale attention"): scale k
                                          # attends to scales <= k, the long input's extra block to everything
    # ---- the teacher (frozen Infinity-2B, block-causal, on the HQ teacher-forcing pyramid) ------------------
    teacher_temperature: float = 1.0      # UNKNOWN; 1: the teacher's own distribution, which the student samples
                                          # at temperature 1 at inference (Gumbel-argmax)
    teacher_cfg: float = 1.0              # UNKNOWN; 1: no classifier-free guidance (one teacher pass); > 1 mixes a
                                          # null-text pass on the logits as Infinity's sampler does
    teacher_text: str = "caption"         # UNKNOWN: the teacher sees the image's caption (the project page: "and
                                          # the caption"); null: the null text (cfg_uncond)
    teacher_shares_weights: bool = True   # the teacher's tensors ARE the student's frozen base (both come from
                                          # infinity_2b_reg.pth): one copy in memory. False: a separate copy
    # ---- text ------------------------------------------------------------------------------------------------
    text_drop_rate: float = 0.1           # Infinity's cond_drop_rate, which the release's student forward applies
                                          # (its constructor default 0.1): an image's text becomes the null text
    text_drop_teacher: bool = True        # UNKNOWN: the dropped image's teacher also gets the null text (a
                                          # consistent pair; the release's drop overwrites the shared text tensor)
    text_encoder: str = "t5"              # t5: Flan-T5-XL features through the text cache (the method; model.text_*
                                          # say which model, cache, device); random: seeded random features per
                                          # prompt, for random-init tests/demo ONLY
    val_prompt: str = ""                  # validation images have no captions: this prompt for all
    # ---- pixel losses on the straight-through decode ---------------------------------------------------------
    mse_weight: float = 1.0               # UNKNOWN ("perceptual and MSE losses"); 1 as OSEDiff's L2 (the one-step
                                          # SR baseline the paper compares with), on [-1, 1] images
    lpips_weight: float = 2.0             # UNKNOWN; 2 as OSEDiff's LPIPS weight
    lpips_net: str = "vgg"                # UNKNOWN: VGG16 LPIPS, the perceptual loss of one-step SR distillation
                                          # (OSEDiff); alex: the metric's network
    lpips_weights: Optional[str] = None   # vgg16-397923af.pth / alexnet-owt-7be5be79.pth; None: checkpoints/, hub
    gumbel_tau: float = 0.5               # the release's GumbelArgmax temperature (soft path of the gradient only)
    decode_clamp: bool = True             # the release's decode clamps to [-1, 1] (no gradient where it clips)
    # ---- what trains and in which precision ------------------------------------------------------------------
    student_drop_path: float = 0.1        # the release builds BInfinity with drop_path_rate=0.1 (active in
                                          # training); UNKNOWN whether its training used the same builder
    preclean_lq: bool = True              # UNKNOWN: SwinIR cleans the LQ before the student in training, as the
                                          # release does at inference (then train and test inputs match); needs
                                          # model.swinir=true
    frozen_dtype: str = "bf16"            # the frozen blocks of teacher and student in bf16 (the release casts its
                                          # blocks to bf16); fp32 for CPU / fp32 runs. LoRA, VAE, head: fp32
    # ---- data (a folder of clean images or Infinity's jsonl; data.crop_size, data.flip) ---------------------
    degradation: SRDegradationSettings = field(default_factory=SRDegradationSettings)   # the release's ranges
    caption_source: str = "jsonl"         # jsonl: the captions of Infinity metadata (BLIP captions of the clean
                                          # images: `varformer convert varestorer-captions`); fixed: fixed_prompt
    fixed_prompt: str = ""
    short_caption_prob: float = 0.2       # Infinity's get_text_input: the short caption with this probability
    # ---- frozen weights (the VAE and SwinIR: model.vae_path, model.swinir_path) ------------------------------
    infinity_path: Optional[str] = None   # infinity_2b_reg.pth: the teacher and the student's frozen base; None:
                                          # checkpoints/, then the Hugging Face cache / hub (FoundationVision/Infinity)
    random_init_backbone: bool = False    # tests/demo only: random Infinity, VAE, SwinIR and LPIPS trunk, explicitly

    def validate(self) -> "VARestorerDistillConfig":
        for name, value, allowed in (("bit_loss", self.bit_loss, BIT_LOSSES),
                                     ("bit_loss_reduction", self.bit_loss_reduction, REDUCTIONS),
                                     ("teacher_text", self.teacher_text, TEACHER_TEXTS),
                                     ("text_encoder", self.text_encoder, TEXT_ENCODERS),
                                     ("caption_source", self.caption_source, CAPTION_SOURCES),
                                     ("frozen_dtype", self.frozen_dtype, FROZEN_DTYPES)):
            if value not in allowed:
                raise ConfigError(f"train.loss.{name} must be one of {', '.join(allowed)}, got {value!r}")
        for name in ("bit_loss_weight", "mse_weight", "lpips_weight"):
            if getattr(self, name) < 0:
                raise ConfigError(f"train.loss.{name} must be >= 0, got {getattr(self, name)}")
        if self.teacher_temperature <= 0 or self.gumbel_tau <= 0:
            raise ConfigError("train.loss.teacher_temperature and train.loss.gumbel_tau must be > 0")
        if self.teacher_cfg < 1:
            raise ConfigError(f"train.loss.teacher_cfg must be >= 1 (1: no guidance), got {self.teacher_cfg}")
        for name in ("text_drop_rate", "short_caption_prob", "student_drop_path"):
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError(f"train.loss.{name} must be in [0, 1], got {getattr(self, name)}")
        if self.bit_loss_weight == 0 and self.mse_weight == 0 and self.lpips_weight == 0:
            raise ConfigError("train.loss: every loss weight is 0, nothing would train")
        return self

    @property
    def needs_teacher(self) -> bool:
        return self.bit_loss == "kl" and self.bit_loss_weight > 0

    @property
    def needs_decode(self) -> bool:
        return self.mse_weight > 0 or self.lpips_weight > 0
