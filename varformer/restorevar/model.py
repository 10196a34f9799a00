"""RestoreVAR (Rajagopalan, Narayan, Patel, "RestoreVAR: Visual Autoregressive Generation for All-in-One Image
Restoration", arXiv 2505.18047, ICLR 2026) on our VAR backbone: the VQVAE, an image-conditioned VAR at 512 px, the
latent refiner, and a VQVAE whose decoder was fine-tuned on continuous latents.

    m = RestoreVAR.from_official("restorevar.pth", "vae_restorevar.ckpt")    # strict; or state dicts
    out = m(lq01)                          # (B, 3, 512, 512) in [0, 1] -> [0, 1]
    so = m.sample_outputs(lq01)            # deg_latent, tokens, f_hat, refined, image
    to = m.training_outputs(lq01, gt01)    # stage 1: teacher-forced logits, GT tokens, cross-entropy
    rl = m.refiner_loss(lq01, gt01)        # stage 2: L1 of the refined latent to quant_conv(encoder(gt))

Sub-modules: ``vae`` (the image VQVAE: encodes the degraded image, holds the codebook the sampler uses and decodes
the result -- ``vae_restorevar.ckpt`` at inference), ``var`` (``RestoreVARTransformer``), ``refiner``
(``LatentRefiner``, None for the stage-1 model) and, only when it differs from ``vae``, ``tokenizer_vae`` (the VQVAE
whose tokens stage 1 is taught on: ``vae_ch160v4096z32.pth``). ``training_outputs`` reproduces the official stage-1
step, whose only VQVAE is the tokenizer (GT tokens, teacher-forcing input and the degraded latent all come from
it); everything else uses ``vae``, as the official inference and stage 2 do.

Inference (official ``infer.py`` / ``autoregressive_infer_cfg``): ``z = vae.encoder(lq)`` (before ``quant_conv``)
conditions a greedy, KV-cached 10-scale rollout; the refiner corrects its ``f_hat`` using the last-block outputs of
all scales; ``vae`` decodes. Every image of a batch gets what it gets alone (no operation mixes rows). Precision:
see ``varformer.restorevar.transformer``; the VQVAE and the refiner target are float32.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.profiler import record_function

from varformer.backbone.vqvae import VQVAE
from varformer.checkpoints import architecture_differences, strict_load
from varformer.errors import VarformerError
from varformer.restorevar.convert import convert_restorevar
from varformer.restorevar.refiner import LatentRefiner
from varformer.restorevar.settings import PATCH_NUMS_512, RestoreVARSettings, architecture_of, vqvae_width
from varformer.restorevar.transformer import RestoreVARTransformer, RolloutOutput
from varformer.restorevar.weights import DECODER_VAE_FILE, RESTOREVAR_FILE, TOKENIZER_FILE, read_weights
from varformer.runtime import fp32_region

# record_function ranges around the parts of a forward pass (benchmark part timing)
PART_CONDITION = "restorevar.encode_condition"
PART_VAR_LOOP = "restorevar.var_scale_loop"
PART_REFINER = "restorevar.refiner"
PART_DECODER = "restorevar.vqvae_decoder"
PARTS = (PART_CONDITION, PART_VAR_LOOP, PART_REFINER, PART_DECODER)
EXPLAIN = architecture_differences(architecture_of)   # "depth: checkpoint 16, model 20" in load errors


class RestoreVARInputError(VarformerError, ValueError):
    """An input the model cannot take (wrong size, channels or dtype), or a call the model cannot serve."""


@dataclass
class SampleOutputs:
    deg_latent: torch.Tensor         # (B, 32, G, G) VQVAE encoder output of the degraded image, before quant_conv
    tokens: List[torch.Tensor]       # per scale (B, pn^2) greedy token maps
    f_hat: torch.Tensor              # (B, 32, G, G) sampled latent, before the refiner
    refined: torch.Tensor            # (B, 32, G, G) after the refiner (= f_hat without one)
    image: torch.Tensor              # (B, 3, 16G, 16G) in [0, 1]


@dataclass
class TrainingOutputs:
    logits: torch.Tensor             # (B, L, V) teacher-forced logits, float32
    gt_tokens: List[torch.Tensor]    # per scale (B, pn^2): the tokenizer's tokens of the GT image
    ce: torch.Tensor                 # mean cross-entropy over all B * L positions


class RestoreVAR(nn.Module):
    def __init__(self, depth: int = 16, embed_dim: Optional[int] = None, vae_ch: int = 160,
                 patch_nums: Sequence[int] = PATCH_NUMS_512, refiner_depth: int = 12, refiner_dim: int = 384,
                 refiner_heads: int = 6, refiner_mlp_dim: int = 768, separate_tokenizer: bool = False,
                 drop_path_rate: float = 0.0):
        super().__init__()
        s = RestoreVARSettings(depth, embed_dim, vae_ch, list(patch_nums), refiner_depth, refiner_dim, refiner_heads,
                               refiner_mlp_dim, separate_tokenizer).validate()
        self._settings = s
        self.image_size = s.image_size
        vae_kw = dict(vocab_size=4096, z_channels=32, ch=vae_ch, share_quant_resi=4, patch_nums=tuple(s.patch_nums))
        self.vae = VQVAE(**vae_kw)
        self.tokenizer_vae = VQVAE(**vae_kw) if separate_tokenizer else None
        self.var = RestoreVARTransformer(Cvae=32, vocab_size=4096, patch_nums=s.patch_nums, depth=depth,
                                         embed_dim=s.embed_dim, num_heads=s.num_heads, drop_path_rate=drop_path_rate)
        self.refiner = (LatentRefiner(num_tokens=self.var.N, cond_tokens=self.var.L, in_dim=32, cond_dim=s.embed_dim,
                                      dim=refiner_dim, depth=refiner_depth, heads=refiner_heads,
                                      mlp_dim=refiner_mlp_dim) if refiner_depth else None)

    # ------------------------------------------------------------------ settings and modes
    def settings(self) -> RestoreVARSettings:
        return self._settings

    @property
    def tokenizer(self) -> VQVAE:
        """The VQVAE stage 1 is taught on (``tokenizer_vae`` when there is a separate one, else ``vae``)."""
        return self.tokenizer_vae if self.tokenizer_vae is not None else self.vae

    def train(self, mode: bool = True):
        super().train(mode)
        self.vae.eval()   # frozen tokenizers: the quantizer's training branch (usage statistics) must not run
        if self.tokenizer_vae is not None:
            self.tokenizer_vae.eval()
        return self

    def _check_input(self, x: torch.Tensor, what: str = "images") -> None:
        S = self.image_size
        if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[1] != 3:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise RestoreVARInputError(f"expected {what} (B, 3, {S}, {S}) in [0, 1], got {got}")
        if tuple(x.shape[-2:]) != (S, S):
            raise RestoreVARInputError(
                f"RestoreVAR works on {S}x{S} inputs only (its last scale is a {S // 16}x{S // 16} latent), got "
                f"{x.shape[-2]}x{x.shape[-1]}; resize (the restorevar protocol) or tile the image first")
        if not x.is_floating_point():
            raise RestoreVARInputError(f"expected a float tensor in [0, 1], got {x.dtype}")

    # ------------------------------------------------------------------ pieces
    @staticmethod
    def _pm1(x01: torch.Tensor) -> torch.Tensor:
        return x01.float() * 2 - 1

    @staticmethod
    def degraded_latent(vae: VQVAE, x_pm1: torch.Tensor) -> torch.Tensor:
        """``vae.encoder(x)``, before ``quant_conv`` (official ``img_to_fs(...)[3]``: its other levels and the
        identity 32->32 bicubic resize are skipped); float32, no graph (the VQVAE is never trained)."""
        with torch.no_grad(), fp32_region(x_pm1.device):
            return vae.encoder(x_pm1.float())

    def refine(self, f_hat_BChw: torch.Tensor, hidden_BLC: torch.Tensor) -> torch.Tensor:
        """The refiner on the flattened latent (row-major tokens), reshaped back; identity without a refiner."""
        if self.refiner is None:
            return f_hat_BChw
        B, C, H, W = f_hat_BChw.shape
        out = self.refiner(f_hat_BChw.flatten(2).transpose(1, 2), hidden_BLC)
        return out.float().transpose(1, 2).reshape(B, C, H, W)

    def rollout(self, x_pm1: torch.Tensor) -> tuple:
        """(degraded latent, ``RolloutOutput``) of images in [-1, 1] with the image VQVAE."""
        with record_function(PART_CONDITION):
            z = self.degraded_latent(self.vae, x_pm1)
            cond = self.var.condition(z)
        with record_function(PART_VAR_LOOP):
            return z, self.var.greedy_rollout(cond, self.vae)

    def _sample(self, lq01: torch.Tensor) -> SampleOutputs:
        z, r = self.rollout(self._pm1(lq01))
        with record_function(PART_REFINER):
            refined = self.refine(r.f_hat, r.hidden_BLC)
        with record_function(PART_DECODER):
            image = self.vae.fhat_to_img(refined).add(1).mul(0.5)
        return SampleOutputs(z, r.tokens, r.f_hat, refined, image)

    # ------------------------------------------------------------------ public calls
    def forward(self, lq01: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) in [0, 1] -> restored (B, 3, S, S) in [0, 1] (S = 512 for the released model), under
        ``torch.inference_mode``; the caller's autocast applies to the blocks and the refiner."""
        self._check_input(lq01)
        with torch.inference_mode():
            return self._sample(lq01).image

    def sample_outputs(self, lq01: torch.Tensor) -> SampleOutputs:
        """Every intermediate of the forward pass (no autograd graph)."""
        self._check_input(lq01)
        with torch.no_grad():
            return self._sample(lq01)

    def training_outputs(self, lq01: torch.Tensor, gt01: torch.Tensor) -> TrainingOutputs:
        """Stage 1 (official trainer.py ``train_step``): the tokenizer's GT tokens, teacher-forced logits conditioned
        on the degraded image, their cross-entropy (a plain mean over all positions). Gradients reach the
        transformer only."""
        self._check_input(lq01, "degraded images")
        self._check_input(gt01, "ground-truth images")
        tok = self.tokenizer
        with torch.no_grad():
            gt_tokens = tok.img_to_indices(self._pm1(gt01))
            x_BLCv = tok.indices_to_var_input(gt_tokens)
            z = self.degraded_latent(tok, self._pm1(lq01))
        logits = self.var.teacher_forced(x_BLCv, self.var.condition(z))
        ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), torch.cat(gt_tokens, dim=1).reshape(-1))
        return TrainingOutputs(logits, gt_tokens, ce)

    def refiner_loss(self, lq01: torch.Tensor, gt01: torch.Tensor, rollout_drop_path: bool = False) -> torch.Tensor:
        """Stage 2 (official trainer_refiner.py): L1 (mean) between the refined latent of a full greedy rollout and
        ``quant_conv(encoder(gt))``. The rollout runs without a graph, so gradients reach the refiner only.
        ``rollout_drop_path=True`` samples with the transformer in training mode, as the release does (drop path
        active in frozen blocks); by default it samples as at inference."""
        if self.refiner is None:
            raise RestoreVARInputError("this RestoreVAR has no refiner (refiner_depth=0: the stage-1 layout)")
        self._check_input(lq01, "degraded images")
        self._check_input(gt01, "ground-truth images")
        with torch.no_grad():
            with fp32_region(gt01.device):
                target = self.vae.encode(self._pm1(gt01))
            was_training = self.var.training
            self.var.train(rollout_drop_path)
            try:
                _, r = self.rollout(self._pm1(lq01))
            finally:
                self.var.train(was_training)
        refined = self.refine(r.f_hat, r.hidden_BLC)
        return F.l1_loss(refined.float(), target)

    def decode(self, latent_BChw: torch.Tensor) -> torch.Tensor:
        """The image VQVAE's decoder on a continuous latent: [0, 1] images (float32)."""
        return self.vae.fhat_to_img(latent_BChw).add(1).mul(0.5)

    # ------------------------------------------------------------------ official weights
    @classmethod
    def from_official(cls, var_sd_or_path, vae_sd_or_path, tokenizer_vae=None, map_location="cpu") -> "RestoreVAR":
        """``restorevar.pth`` + ``vae_restorevar.ckpt`` (+ the tokenizer ``vae_ch160v4096z32.pth``; default: the
        same VQVAE), state dicts or paths; every tensor is placed or checked against ours (strict), eval mode."""
        var_sd = read_weights(var_sd_or_path, RESTOREVAR_FILE, map_location)
        vae_sd = read_weights(vae_sd_or_path, DECODER_VAE_FILE, map_location)
        tok_sd = None if tokenizer_vae is None else read_weights(tokenizer_vae, TOKENIZER_FILE, map_location)
        cfg, state_dict = convert_restorevar(var_sd)
        state_dict.update({f"vae.{k}": v for k, v in vae_sd.items()})
        if tok_sd is not None:
            state_dict.update({f"tokenizer_vae.{k}": v for k, v in tok_sd.items()})
        vae_ch = vqvae_width(vae_sd, "the VQVAE state dict")
        settings = RestoreVARSettings(**cfg, vae_ch=vae_ch, separate_tokenizer=tok_sd is not None).validate()
        with torch.device("meta"):
            model = cls(**settings.constructor_kwargs())
        strict_load(model, state_dict, "official RestoreVAR weights", assign=True, explain=EXPLAIN)
        return model.eval()


def rollout_of(model: RestoreVAR, lq01: torch.Tensor) -> RolloutOutput:
    """The greedy rollout alone (no refiner, no decoding), without a graph: for checks and benchmarks."""
    model._check_input(lq01)
    with torch.no_grad():
        return model.rollout(model._pm1(lq01))[1]
