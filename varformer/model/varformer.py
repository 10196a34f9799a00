"""The assembled models: ``VarFormerStage1`` (Adapter on a frozen VAR) and ``VarFormer`` (the stage-2 restorer).

    m = VarFormer(depth=16, vae_ch=160, n_cross=8, dec_adjust=False, cfg=0.5)   # released (test) layout
    m = build_varformer(VarFormerSettings(...))                                 # the same from settings
    out = m(lq)                     # (B, 3, 256, 256) in [0, 1] -> [0, 1], under torch.inference_mode
    t = m.training_outputs(lq)      # autograd graph; restored in [-1, 1], lq_feat, logits, tokens, priors, ...
    m.prepare_inference("bf16")     # inference only: weights that bf16 autocast casts anyway held in bf16

A constructor builds every part with random weights (the frozen VQVAE + VAR included): use
``load_official(path)`` (released BasicSR checkpoint), ``load_varformer(path)`` (our checkpoint) or
``m.load_backbone(vae_path, var_path)`` (official VQVAE/VAR files, for training the rest) to get real weights.

Forward (docs/architecture.md): frozen VQVAE encoder (latent f, level features V_i) -> Adapter -> multi-scale
quantisation of the adapted latent (degraded tokens, ``lq_feat``) -> greedy VAR rollout with cross-attention
injection (tokens, logits, ``f_hat``, 10 scale priors) -> U-Net encoder with DAE + AFT -> frozen ``quant_conv``
-> U-Net decoder with adaptive mix-up skips, DAE + AFT on the frozen VQVAE-decoder features of ``f_hat`` ->
global residual blend -> clamp. Each part runs inside a ``torch.profiler.record_function`` range named in
``PARTS`` (the benchmark's part timing reads them; they cost nothing when no profiler runs).

Ablations (docs/ablations.md): ``VarFormer(prior="none")`` is the U-Net alone -- no VAR transformer, Adapter or
cross-attention is built and nothing but the U-Net (and the frozen ``quant_conv`` between its halves) runs;
``prior="fixed"``, ``aft=False`` and ``mixup_skip=False`` change the U-Net's guidance and skips
(``varformer.model.unet``). The defaults are the released model.

Not computed, because nothing uses it: the Lvl-0 prior/DAE/AFT modules, the RGB output of the VQVAE decoder on
``f_hat`` (and its full-resolution level unless ``dec_adjust`` needs it), the encoder DAE side output and the
single-channel softmax of the residual weight (identically 1).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Dict, List, Optional

import torch
from torch import nn
from torch.profiler import record_function

from varformer.backbone.hub import load_vae, load_var
from varformer.backbone.var import VAR
from varformer.backbone.vqvae import VQVAE
from varformer.checkpoints import strict_load
from varformer.errors import CheckpointMismatchError, VarformerError
from varformer.model.adapter import Adapter
from varformer.model.convert import infer_official_layout, map_official, read_official
from varformer.model.cross_attention import CrossAttentionInjection
from varformer.model.prior_rollout import RolloutOutput, greedy_rollout
from varformer.model.settings import STAGE_CLASSES, STAGE_DESCRIPTIONS, VarFormerSettings
from varformer.model.unet import UNetDecoder, UNetEncoder
from varformer.runtime import autocast, check_precision, fp32_region

IMAGE_SIZE = 256
CH_MULT = (1, 1, 2, 2, 4)
CROSS_HEADS = 16  # official: 16 heads whatever the VAR width

# record_function ranges around the parts of a forward pass (benchmark part timing, profiler traces)
PART_ENCODE = "varformer.encode_adapt_quantise"
PART_VAR_LOOP = "varformer.var_scale_loop"
PART_UNET_ENCODER = "varformer.unet_encoder"
PART_VQ_DECODER = "varformer.vqvae_decoder_features"
PART_UNET_DECODER = "varformer.unet_decoder"
PARTS = (PART_ENCODE, PART_VAR_LOOP, PART_UNET_ENCODER, PART_VQ_DECODER, PART_UNET_DECODER)


class ModelInputError(VarformerError, ValueError):
    """An input the model cannot take (wrong size, channels or dtype)."""


@dataclass
class Stage1Outputs:
    # lq_feat, logits and tokens are None only for the stage-2 ablation without the VAR prior
    restored: torch.Tensor           # (B, 3, 256, 256) in [-1, 1]: VQVAE reconstruction of the greedy tokens
    lq_feat: Optional[torch.Tensor]  # (B, 32, 16, 16) quantised adapted latent, gradient straight to the adapter
    logits: Optional[torch.Tensor]   # (B, 680, V) CFG-combined logits of the greedy rollout (float32)
    tokens: Optional[List[torch.Tensor]]  # 10 x (B, pn^2) greedy index maps


@dataclass
class VarFormerOutputs(Stage1Outputs):
    priors: Optional[torch.Tensor] = None                 # (B, 10, 32, 16, 16) per-scale increments
    dae_weights: Optional[Dict[str, torch.Tensor]] = None  # 'encoder.level1'.. 'decoder.level1' -> (B, 10)



class _AdaptedVAR(nn.Module):
    """Frozen VQVAE + VAR, the Adapter and the cross-attention blocks: everything stage 1 and stage 2 share."""

    stage: int = 0

    def __init__(self, depth: int, vae_ch: int, n_cross: int, cfg: float, head_layout: str, dec_adjust: bool = False,
                 with_var: bool = True):
        super().__init__()
        VarFormerSettings(stage=self.stage, depth=depth, vae_ch=vae_ch, n_cross=n_cross, dec_adjust=dec_adjust, cfg=cfg,
                          head_layout=head_layout).validate()
        self.depth, self.vae_ch, self.n_cross, self.cfg, self.head_layout = depth, vae_ch, n_cross, cfg, head_layout
        self.vae = VQVAE(vocab_size=4096, z_channels=32, ch=vae_ch, share_quant_resi=4)
        # with_var=False (the ablation without the VAR prior): no VAR transformer, Adapter or cross-attention
        # drop path off: the VAR blocks are frozen and only ever run as at inference
        self.var = VAR(self.vae, depth=depth, num_classes=1000, shared_aln=False, attn_l2_norm=True,
                       drop_path_rate=0.0) if with_var else None
        self.adapter = Adapter(channels=32, n_blocks=4) if with_var else None
        # False: the VAR loop (blocks, cross-attention) stays float32 under autocast; True: it follows autocast
        self.bf16_transformer = False
        self.cross_attn = nn.ModuleList(CrossAttentionInjection(self.var.C, CROSS_HEADS, head_layout)
                                        for _ in range(n_cross))
        # the dtype the weights are held in: "fp32" (training, any precision) or "bf16" (``prepare_inference``)
        self.weights_precision = "fp32"
        self._bf16_held_transformer = False

    # ------------------------------------------------------------------ settings and weights
    def settings(self) -> VarFormerSettings:
        return VarFormerSettings(stage=self.stage, depth=self.depth, vae_ch=self.vae_ch, n_cross=self.n_cross,
                                 dec_adjust=getattr(self, "dec_adjust", False), cfg=self.cfg,
                                 head_layout=self.head_layout, prior=getattr(self, "prior", "dae"),
                                 aft=getattr(self, "aft", True), mixup_skip=getattr(self, "mixup_skip", True))

    def frozen_modules(self) -> List[nn.Module]:
        """What the official recipes freeze: the VQVAE and the VAR transformer blocks (not the VAR embeddings,
        ``head_nm`` and ``head``, which both official stages train)."""
        return [self.vae] + ([self.var.blocks] if self.var is not None else [])

    def freeze_official(self) -> "_AdaptedVAR":
        for p in self.parameters():
            p.requires_grad_(True)
        for m in self.frozen_modules():
            for p in m.parameters():
                p.requires_grad_(False)
        return self

    @classmethod
    def from_official(cls, path_or_state_dict, key: Optional[str] = None, cfg: float = 0.5,
                      head_layout: str = "official", map_location="cpu"):
        """Build from a released BasicSR checkpoint (``params_ema`` unless ``key`` says otherwise), a raw official
        state dict, or a file holding one; the layout is inferred from the tensors, the load is strict."""
        sd = read_official(path_or_state_dict, key=key, map_location=map_location)
        arch = infer_official_layout(sd)
        if arch["stage"] != cls.stage:
            raise CheckpointMismatchError(
                f"the official checkpoint is a {STAGE_DESCRIPTIONS[arch['stage']]} one, but {cls.__name__} is a "
                f"{STAGE_DESCRIPTIONS[cls.stage]} model; load it with {STAGE_CLASSES[arch['stage']]} instead")
        settings = VarFormerSettings(**arch, cfg=cfg, head_layout=head_layout)
        with torch.device("meta"):
            model = cls(**settings.constructor_kwargs())
        _, state_dict = map_official(sd, {k: t.shape for k, t in model.state_dict().items()})
        strict_load(model, state_dict, "official checkpoint", assign=True)
        return model.eval()

    # ------------------------------------------------------------------ inference precision
    def _bf16_weight_modules(self) -> List[nn.Module]:
        """The modules whose weights may be held in bf16: those that run under bf16 autocast anyway. The VAR
        blocks and cross-attention only with ``bf16_transformer``; never the VQVAE, codebook, VAR embeddings or
        head (they run in float32 whatever the caller asks)."""
        return [self.var.blocks, self.cross_attn] if self.bf16_transformer and self.var is not None else []

    def _fp32_weight_modules(self) -> List[nn.Module]:
        """Parts of the bf16 modules whose weights stay float32 (the softmax-weight heads and the like)."""
        return []

    def prepare_inference(self, precision: str = "bf16", bf16_transformer: Optional[bool] = None,
                          channels_last: bool = True):
        """Hold the weights for inference at ``precision`` and switch to eval mode; returns the model.

        ``"bf16"``: the convolution and linear weights that bf16 autocast casts to bf16 at every call anyway are
        stored in bf16 -- those of the U-Net with its DAE/AFT/bridge parts, except the softmax-weight heads and
        the deformable alignment, and those of the VAR blocks and cross-attention if ``bf16_transformer`` (which
        this call may also set). Norm affines, gates and bias tables (a few thousand values) stay float32, and
        so do the VQVAE, codebook, VAR embeddings and head. With ``channels_last=False`` outputs equal those of
        the float32-held model under bf16 autocast; the resident weights shrink by 2 bytes per such parameter
        (docs/precision.md). Such a model runs only ``precision='bf16'`` (its default) and cannot train.
        ``channels_last`` (bf16 only) also stores those convolution weights channels-last, which oneDNN's bf16
        kernels take without reordering; activations follow the weights' layout, and outputs then differ from the
        autocast ones by bf16 rounding only.
        ``"fp32"``: every weight back to float32 and contiguous (bf16-rounded values stay rounded)."""
        check_precision(precision, allow_auto=False)
        if bf16_transformer is not None:
            self.bf16_transformer = bool(bf16_transformer)
        self.float()
        self.to(memory_format=torch.contiguous_format)
        self.weights_precision, self._bf16_held_transformer = "fp32", False
        if precision == "bf16":
            keep = {id(m) for root in self._fp32_weight_modules() for m in root.modules()}
            for root in self._bf16_weight_modules():
                for m in root.modules():
                    if isinstance(m, (nn.Conv2d, nn.Linear)) and id(m) not in keep:
                        m.to(torch.bfloat16)
                        if channels_last and isinstance(m, nn.Conv2d):
                            m.to(memory_format=torch.channels_last)
            self.weights_precision, self._bf16_held_transformer = "bf16", self.bf16_transformer
        return self.eval()

    def _resolve_precision(self, precision: Optional[str]) -> str:
        if self._bf16_held_transformer and not self.bf16_transformer:
            raise ValueError("the VAR blocks are held in bf16 but bf16_transformer was switched off; call "
                             "prepare_inference again")
        if precision is None:
            return self.weights_precision
        if self.weights_precision == "bf16" and precision != "bf16":
            raise ValueError(f"this model holds its weights in bf16 (prepare_inference('bf16')); it runs "
                             f"precision='bf16' only, got {precision!r}; call prepare_inference('fp32') first")
        return precision

    def _check_trainable(self) -> None:
        if self.weights_precision != "fp32":
            raise ValueError("training_outputs needs float32 weights; this model was prepared for bf16 inference "
                             "(call prepare_inference('fp32') first)")

    def train(self, mode: bool = True):
        super().train(mode)
        self.vae.eval()  # frozen tokenizer: its quantizer's training branch (usage statistics) must not run
        return self

    def load_backbone(self, vae_path=None, var_path=None, local_files_only: bool = False) -> "_AdaptedVAR":
        """Load the official VQVAE and VAR files (strict) into the frozen backbone. ``None`` searches
        ``checkpoints/`` then the Hugging Face cache/hub; a missing file raises ``WeightsNotFoundError`` saying
        where to get it. A model without the VAR prior (ablation) has no VAR: only the VQVAE file is read."""
        vae = load_vae(vae_path, ch=self.vae_ch, local_files_only=local_files_only)
        assign = next(self.parameters()).device.type == "meta"
        self.vae.load_state_dict(vae.state_dict(), strict=True, assign=assign)
        if self.var is not None:
            var = load_var(self.depth, var_path, vae=vae, local_files_only=local_files_only)
            self.var.load_state_dict(var.state_dict(), strict=True, assign=assign)
        return self

    # ------------------------------------------------------------------ shared forward pieces
    def _check_input(self, lq: torch.Tensor) -> None:
        if not isinstance(lq, torch.Tensor) or lq.ndim != 4 or lq.shape[1] != 3:
            raise ModelInputError(f"expected images (B, 3, {IMAGE_SIZE}, {IMAGE_SIZE}) in [0, 1], "
                                  f"got {tuple(lq.shape) if isinstance(lq, torch.Tensor) else type(lq).__name__}")
        if tuple(lq.shape[-2:]) != (IMAGE_SIZE, IMAGE_SIZE):
            raise ModelInputError(
                f"VarFormer works on {IMAGE_SIZE}x{IMAGE_SIZE} inputs only (its quantizer needs a 16x16 latent), "
                f"got {lq.shape[-2]}x{lq.shape[-1]}; resize (official protocol) or tile the image first")
        if not lq.is_floating_point():
            raise ModelInputError(f"expected a float tensor in [0, 1], got {lq.dtype}")

    def _adapt_and_rollout(self, x: torch.Tensor):
        """x in [-1, 1] -> (VQVAE encoder level features, lq_feat, rollout)."""
        # tokenizer side in float32: code search near-ties flip under bf16
        with record_function(PART_ENCODE), fp32_region(x.device):
            z, enc_feats, _ = self.vae.encoder.forward_features(x.float())
            enc_feats[0] = None  # the full-resolution level is never used (no Lvl-0 guidance): free it now
            f = self.vae.quant_conv(z)
            f_a = self.adapter(f)
            idx_lq, fhats = self.vae.f_to_indices_and_fhats(f_a)
            lq_feat = f_a + (fhats[-1] - f_a).detach()
            x_lq = self.vae.indices_to_var_input(idx_lq)
        # the VAR loop follows the caller's autocast only when asked: greedy argmax over 4096 logits flips under
        # bf16 (docs/precision.md), which changes every prior downstream
        with record_function(PART_VAR_LOOP), contextlib.nullcontext() if self.bf16_transformer else fp32_region(x.device):
            rollout = greedy_rollout(self.var, self.cross_attn, x_lq, self.cfg, self.head_layout)
        return enc_feats, lq_feat, rollout

    def var_prediction(self, lq: torch.Tensor) -> RolloutOutput:
        """The greedy VAR rollout conditioned on ``lq`` (B, 3, 256, 256) in [0, 1], without the U-Net: tokens,
        logits, ``f_hat`` and the scale priors, float32, no autograd graph (the analysis figures use it)."""
        self._check_input(lq)
        if self.var is None:
            raise ModelInputError("this model has no VAR prior (ablation prior=none): there is no VAR prediction")
        with torch.inference_mode():
            return self._adapt_and_rollout((lq.float() - 0.5) / 0.5)[2]

    def forward(self, lq: torch.Tensor, precision: Optional[str] = None) -> torch.Tensor:
        """(B, 3, 256, 256) in [0, 1] -> restored (B, 3, 256, 256) in [0, 1]; no autograd graph.
        ``precision='bf16'``: bf16 autocast for the U-Net (and for the VAR transformer and cross-attention when
        ``bf16_transformer`` is set); the tokenizer, quantizer, codebook lookups, logits and the softmax-weight
        heads always stay float32. Default: the precision the weights are held in (``prepare_inference``);
        ``'fp32'`` inside a caller's autocast follows that autocast."""
        self._check_input(lq)
        precision = self._resolve_precision(precision)
        with torch.inference_mode(), autocast(lq.device, precision):
            out = self._restore(lq)
        return out.float().add(1).mul(0.5).clamp(0, 1)


class VarFormerStage1(_AdaptedVAR):
    """Stage 1: Adapter + cross-attention on the frozen VAR; its output is VAR's reconstruction of the greedy
    tokens. Official stage-1 layout: depth 20, 20 cross-attention blocks."""

    stage = 1

    def __init__(self, depth: int = 20, vae_ch: int = 160, n_cross: int = 20, cfg: float = 0.5,
                 head_layout: str = "official"):
        super().__init__(depth, vae_ch, n_cross, cfg, head_layout)

    def training_outputs(self, lq: torch.Tensor) -> Stage1Outputs:
        self._check_input(lq)
        self._check_trainable()
        _, lq_feat, r = self._adapt_and_rollout((lq - 0.5) / 0.5)
        return Stage1Outputs(restored=self.vae.fhat_to_img(r.f_hat), lq_feat=lq_feat, logits=r.logits,
                             tokens=r.tokens)

    def _restore(self, lq: torch.Tensor) -> torch.Tensor:
        _, _, r = self._adapt_and_rollout((lq - 0.5) / 0.5)
        return self.vae.fhat_to_img(r.f_hat)


class VarFormer(_AdaptedVAR):
    """Stage 2: the restorer. Released (test) layout: depth 16, 8 cross blocks, no decoder alignment."""

    stage = 2

    def __init__(self, depth: int = 16, vae_ch: int = 160, n_cross: int = 8, dec_adjust: bool = False,
                 cfg: float = 0.5, head_layout: str = "official", input_weight_init: float = 0.5,
                 prior: str = "dae", aft: bool = True, mixup_skip: bool = True):
        VarFormerSettings(stage=2, depth=depth, vae_ch=vae_ch, n_cross=n_cross, dec_adjust=dec_adjust, prior=prior,
                          aft=aft, mixup_skip=mixup_skip).validate()
        super().__init__(depth, vae_ch, n_cross, cfg, head_layout, dec_adjust, with_var=prior != "none")
        self.dec_adjust, self.prior, self.aft, self.mixup_skip = dec_adjust, prior, aft, mixup_skip
        self.unet_encoder = UNetEncoder(ch=vae_ch, ch_mult=CH_MULT, num_res_blocks=2, z_channels=32, heads=8,
                                        prior=prior, aft=aft)
        self.unet_decoder = UNetDecoder(ch=vae_ch, ch_mult=CH_MULT, num_res_blocks=2, z_channels=32, heads=4,
                                        dec_adjust=dec_adjust, prior=prior, aft=aft, mixup_skip=mixup_skip)
        # global residual: out = (1 - w) * net + w * input. Official init 0.5. For short runs from scratch, 1.0
        # starts the restorer as the identity; Adam still gives the U-Net full-size steps (its gradient is scaled
        # by 1 - w, which Adam normalises away) while w itself learns how much of the network to mix in.
        self.input_weight = nn.Parameter(torch.tensor(float(input_weight_init)))

    def compile_unet(self, mode: Optional[str] = None) -> "VarFormer":
        """``torch.compile`` the U-Net encoder and decoder in place (names and state dict unchanged): about two
        thirds of the inference time, at fixed shapes for a given batch size, so one graph each, compiled at the
        first call (minutes on a CPU). ``mode`` is torch.compile's (``'reduce-overhead'`` adds CUDA graphs on
        GPUs). The VAR scale loop is left eager: its ten scales give ten shapes per block."""
        for part in (self.unet_encoder, self.unet_decoder):
            part.compile(mode=mode, dynamic=False)
        return self

    def _bf16_weight_modules(self) -> List[nn.Module]:
        return super()._bf16_weight_modules() + [self.unet_encoder, self.unet_decoder]

    def _fp32_weight_modules(self) -> List[nn.Module]:
        # the DAE softmax heads (kept float32: their logits decide the blend) and the deformable alignment (no bf16 deform_conv2d kernel)
        keep: List[nn.Module] = [g.select.to_weights for g in self._guidances() if g.select.to_weights is not None]
        keep += [g.fuse.to_logits for g in self._guidances() if g.fuse is not None]
        if self.unet_decoder.align is not None:
            keep.append(self.unet_decoder.align)
        return keep

    def _guidances(self):
        return list(self.unet_encoder.guidance.values()) + list(self.unet_decoder.guidance.values())

    def _vq_decoder_features(self, f_hat: torch.Tensor):
        """Frozen VQVAE decoder on f_hat, features only: (mid, per-level features); the levels below the lowest
        one used (and the RGB head) are skipped."""
        dec = self.vae.decoder
        lowest = 0 if self.dec_adjust else 1
        feats: List[Optional[torch.Tensor]] = [None] * len(dec.up)
        with record_function(PART_VQ_DECODER), fp32_region(f_hat.device):
            mid = dec.mid(dec.conv_in(self.vae.post_quant_conv(f_hat.float())))
            h = mid
            for level in range(len(dec.up) - 1, lowest - 1, -1):
                h = dec.up[level].run_blocks(h)
                feats[level] = h
                if level > lowest:
                    h = dec.up[level].upsample(h)
        return mid, feats

    def _stage2(self, x: torch.Tensor):
        """x in [-1, 1] -> (restored, lq_feat, rollout, DAE weights); lq_feat and the rollout are None without
        the VAR prior (ablation), which runs the U-Net alone."""
        enc_feats = lq_feat = r = priors = dz = dec_feats = None
        if self.var is not None:
            enc_feats, lq_feat, r = self._adapt_and_rollout(x)
            priors = r.priors
        with record_function(PART_UNET_ENCODER):
            h, skips, weights = self.unet_encoder(x, priors, enc_feats)
            y = self.vae.quant_conv(h)
        if r is not None:
            dz, dec_feats = self._vq_decoder_features(r.f_hat)
        with record_function(PART_UNET_DECODER):
            n, dec_weights = self.unet_decoder(y, skips, priors, dz, dec_feats)
        w = self.input_weight.float()
        out = ((1 - w) * n.float() + w * x.float()).clamp(-1, 1)
        return out, lq_feat, r, dict(weights, **dec_weights)

    def training_outputs(self, lq: torch.Tensor) -> VarFormerOutputs:
        """Without the VAR prior (ablation) ``lq_feat``, ``logits``, ``tokens`` and ``priors`` are None."""
        self._check_input(lq)
        self._check_trainable()
        out, lq_feat, r, weights = self._stage2((lq - 0.5) / 0.5)
        if r is None:
            return VarFormerOutputs(restored=out, lq_feat=None, logits=None, tokens=None, dae_weights=weights)
        return VarFormerOutputs(restored=out, lq_feat=lq_feat, logits=r.logits, tokens=r.tokens, priors=r.priors,
                                dae_weights=weights)

    def _restore(self, lq: torch.Tensor) -> torch.Tensor:
        return self._stage2((lq - 0.5) / 0.5)[0]


def build_varformer(settings: VarFormerSettings, input_weight_init: float = 0.5) -> _AdaptedVAR:
    """The model class of ``settings.stage`` with these settings, random weights (build under
    ``torch.device("meta")`` to allocate nothing); ``input_weight_init`` applies to stage 2 only."""
    settings.validate()
    if settings.stage == 1:
        return VarFormerStage1(**settings.constructor_kwargs())  # the ablation switches are stage-2 only
    return VarFormer(**settings.constructor_kwargs(), input_weight_init=input_weight_init)
