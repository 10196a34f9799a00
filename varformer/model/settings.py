"""The settings of a VarFormer model, in one place: what the constructor takes, what a checkpoint records, what
``configs/*.yaml`` set under ``model:``, and what can be read back from a state dict's tensors.

    s = VarFormerSettings(stage=2, depth=16, vae_ch=160, n_cross=8)       # the released layout
    s.constructor_kwargs()              # -> the model class's keyword arguments (stage picks the class)
    s.to_metadata()                     # -> the dict a checkpoint stores; from_metadata() reads it back
    architecture_of(state_dict)         # -> the architecture fields the tensors determine (checks, messages)

``config.ModelConfig`` extends this dataclass with where the weights come from, so a YAML's ``model:`` section,
the checkpoint metadata and the constructor share one list of names (docs/architecture.md).
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import ClassVar, Dict, Mapping, Optional, Tuple

from varformer.errors import CheckpointMismatchError, ConfigError

HEAD_LAYOUTS = ("official", "standard")
PRIORS = ("none", "fixed", "dae")
STAGE_CLASSES = {1: "VarFormerStage1", 2: "VarFormer"}
STAGE_DESCRIPTIONS = {1: "stage-1 (VarFormerStage1: Adapter + cross-attention, no U-Net)",
                      2: "stage-2 (VarFormer: the full restorer)"}


@dataclass
class VarFormerSettings:
    stage: int = 2                      # 1: Adapter model (VarFormerStage1); 2: full restorer (VarFormer)
    depth: int = 16                     # VAR depth: 16 (released weights), 20 (official training), 24, 30
    vae_ch: int = 160                   # VQVAE / U-Net base width (official: 160; tests use 32)
    n_cross: int = 8                    # cross-attention blocks: released 8 (depth // 2), stage-2 recipe 6, stage 1 20
    dec_adjust: bool = False            # deformable decoder alignment (stage 2; official training layout: True)
    cfg: float = 0.5                    # CFG strength of the greedy VAR rollout (official forward default since 07/2025)
    head_layout: str = "official"       # cross-attention head layout: "official" (re-cut, released weights) or "standard"
    # the paper's ablation switches (stage 2; docs/ablations.md); the defaults are the released model
    prior: str = "dae"                  # VAR scale priors: "none" (U-Net alone, no VAR), "fixed" (uniform scale
                                        # weights, added to the feature), "dae" (degradation-aware choice + fusion)
    aft: bool = True                    # anchor attention from the fused feature to the prior (AFT)
    mixup_skip: bool = True             # decoder skips h = s h + (1 - s) E with learned s; False: h + E

    # fields the tensors determine; the others are inference settings a loader may override
    ARCHITECTURE: ClassVar[Tuple[str, ...]] = ("stage", "depth", "vae_ch", "n_cross", "dec_adjust", "prior", "aft",
                                               "mixup_skip")
    INFERENCE: ClassVar[Tuple[str, ...]] = ("cfg", "head_layout")
    # today's model: checkpoints record these switches only when they differ from it
    ABLATION_DEFAULTS: ClassVar[Dict[str, object]] = {"prior": "dae", "aft": True, "mixup_skip": True}

    @classmethod
    def names(cls) -> Tuple[str, ...]:
        return cls.ARCHITECTURE + cls.INFERENCE

    def validate(self) -> "VarFormerSettings":
        if self.stage not in STAGE_CLASSES:
            raise ConfigError(f"model stage must be 1 or 2, got {self.stage!r}")
        if self.head_layout not in HEAD_LAYOUTS:
            raise ConfigError(f"head_layout must be one of {HEAD_LAYOUTS}, got {self.head_layout!r}")
        if self.depth < 1:
            raise ConfigError(f"VAR depth must be >= 1, got {self.depth}")
        if not 0 <= self.n_cross <= self.depth:
            raise ConfigError(f"n_cross must lie in [0, depth={self.depth}], got {self.n_cross}")
        if self.vae_ch % 32:
            raise ConfigError(f"vae_ch must be a multiple of 32 (GroupNorm with 32 groups), got {self.vae_ch}")
        if self.stage == 1 and self.dec_adjust:
            raise ConfigError("dec_adjust is a stage-2 (U-Net decoder) option; a stage-1 model has no decoder")
        self._validate_ablation()
        return self

    def _validate_ablation(self) -> None:
        if self.prior not in PRIORS:
            raise ConfigError(f"prior must be one of {PRIORS}, got {self.prior!r}")
        changed = [k for k, v in self.ABLATION_DEFAULTS.items() if getattr(self, k) != v]
        if self.stage == 1 and changed:
            raise ConfigError(f"{', '.join(changed)}: ablation switches of the stage-2 restorer; a stage-1 model "
                              "has no U-Net")
        if self.prior == "none":
            # the baseline has no VAR rollout: nothing to cross-attend, align to, or attend from
            if self.n_cross:
                raise ConfigError(f"prior 'none' builds no VAR rollout and no cross-attention; set n_cross 0 "
                                  f"(got {self.n_cross})")
            if self.dec_adjust:
                raise ConfigError("prior 'none': dec_adjust aligns to the VQVAE-decoder features of the VAR "
                                  "prediction, which this baseline does not compute; set dec_adjust false")
            if self.aft:
                raise ConfigError("prior 'none': AFT attends to the prior map, which this baseline does not have; "
                                  "set aft false")

    def constructor_kwargs(self) -> Dict[str, object]:
        """Keyword arguments of ``STAGE_CLASSES[stage]`` (``VarFormerStage1`` takes no ``dec_adjust``)."""
        kw = {k: getattr(self, k) for k in ("depth", "vae_ch", "n_cross", "cfg", "head_layout")}
        if self.stage == 2:
            kw["dec_adjust"] = bool(self.dec_adjust)
            kw.update(prior=self.prior, aft=bool(self.aft), mixup_skip=bool(self.mixup_skip))
        return kw

    def to_metadata(self) -> Dict[str, object]:
        """What a checkpoint records about the model (``from_metadata`` reads it back). The ablation switches only
        where they differ from today's model, so its checkpoints read as before."""
        defaults = self.ABLATION_DEFAULTS
        meta = {k: getattr(self, k) for k in self.names() if k not in defaults or getattr(self, k) != defaults[k]}
        if self.stage == 1:
            del meta["dec_adjust"]
        return meta

    @classmethod
    def from_metadata(cls, meta: Mapping[str, object], source: str = "checkpoint") -> "VarFormerSettings":
        unknown = sorted(set(meta) - set(cls.names()))
        if unknown:
            raise CheckpointMismatchError(f"{source}: unknown model settings {unknown} (known: {', '.join(cls.names())})")
        try:
            return cls(**dict(meta)).validate()
        except ConfigError as e:
            raise CheckpointMismatchError(f"{source}: {e}") from None

    @classmethod
    def from_config(cls, model_cfg) -> "VarFormerSettings":
        """The settings part of a config's ``model`` section (``config.ModelConfig`` or a plain object)."""
        return cls(**{k: getattr(model_cfg, k) for k in cls.names()}).validate()

    def replace(self, **changes) -> "VarFormerSettings":
        return dataclasses.replace(self, **changes).validate()


def architecture_of(state_dict: Mapping[str, object]) -> Dict[str, Optional[object]]:
    """The architecture fields of one of *our* state dicts, read from its tensors (checks and error messages)."""
    keys = list(state_dict)
    arch: Dict[str, Optional[object]] = {"stage": 2 if any(k.startswith("unet_encoder.") for k in keys) else 1}
    blocks = {int(m.group(1)) for k in keys for m in [re.match(r"var\.blocks\.(\d+)\.", k)] if m}
    arch["depth"] = max(blocks) + 1 if blocks else None
    cross = {int(m.group(1)) for k in keys for m in [re.match(r"cross_attn\.(\d+)\.", k)] if m}
    arch["n_cross"] = max(cross) + 1 if cross else 0
    w = state_dict.get("vae.encoder.conv_in.weight")
    arch["vae_ch"] = int(w.shape[0]) if w is not None else None
    if arch["stage"] == 2:
        arch["dec_adjust"] = any(k.startswith("unet_decoder.align.") for k in keys)
        guided = any(k.startswith("unet_encoder.guidance.") for k in keys)
        adaptive = any(".select.to_weights." in k for k in keys)
        arch["prior"] = "dae" if adaptive else "fixed" if guided else "none"
        arch["aft"] = any(".aft." in k for k in keys)
        arch["mixup_skip"] = "unet_decoder.theta" in keys
    return arch
