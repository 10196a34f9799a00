"""VARestorer (Zhu et al., "VARestorer: One-Step VAR Distillation for Real-World Image Super-Resolution", ICLR 2026,
arXiv 2604.21450): one bidirectional pass of Infinity-2B + LoRA over the LQ image's token pyramid, equal to the
official inference code (tools/run_varestorer.py ``gen_one_img_anyres`` / ``gen_one_img_eval_long`` for one
512x512 tile; docs/varestorer.md).

    m = VARestorer.from_official("varestorer.pth", "infinity_vae_d32reg.pth", "general_swinir_v1.ckpt")
    text = [t5_rows_0, ...]               # per image (L_i, 2048): Flan-T5-XL last_hidden_state rows of its prompt
    out = m(lq01, text)                   # (B, 3, 512, 512) in [0, 1] -> [0, 1]
    so = m.sample_outputs(lq01, text)     # cleaned, lq_latent, pyramid, logits, bits, image
    img = m.decode_bits(so.bits)

Pipeline (shapes at 512 px, B images): ``cleaned = SwinIR(lq)`` (B, 3, 512, 512), not clamped (D9);
``lq_latent = vae.encode(2 * cleaned - 1)`` (B, 32, 32, 32); ``pyramid`` = the BSQ residual pyramid of the latent
with the long block (B, 3544, 32); ``logits`` = the transformer's bidirectional pass over [start token, pyramid]
(3,545 tokens) at its first 2,521 positions (B, 2521, 64); ``bits`` = one Bernoulli draw per bit (the release's
Gumbel draws, 10 x (B, h, w, 32)); ``image = (vae.decode(summed codes) + 1) / 2``. Every image of a batch gets what it
gets alone, except that the random draws of a batch are one ``torch.rand`` per scale for all its images (as the
release draws them).

Random draws: with ``torch.manual_seed(s)`` just before ``sample_outputs``/``forward``, the CPU generator is used for
nothing but the bits, one ``torch.rand((B, h*w*32, 2))`` per scale, coarse to fine (then moved to the device), so a
seeded call reproduces the release's image. ``argmax_bits=True`` gives deterministic bits instead (not in the
release). The release's random text drop at inference (D1) is off by default: ``text_drop_at_inference=p`` replaces
an image's text by the null text with probability p, drawn from its own generator (never the global one), without
touching the caller's tensors.

Precision: SwinIR, the VAE, the quantiser, the embeddings and text path, the AdaLN maths, the head and the sampling
run in float32 under any autocast (the release keeps these in float32); the blocks' linears and self-attention follow
the caller's autocast (the release: bf16); the text cross-attention is float32.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn as nn
from torch.profiler import record_function

from varformer.backbone.infinity.bit_sampling import sample_bits
from varformer.backbone.infinity.bsq_quantizer import residual_pyramid, summed_codes
from varformer.backbone.infinity.bsq_vae import BSQVAE
from varformer.backbone.infinity.load import bsq_vae_from_official, bsq_vae_layout, unwrap_vae_file
from varformer.backbone.infinity.text_pool import PaddedText
from varformer.backbone.state_dict_check import check_filled, key_mismatch
from varformer.backbone.swinir import SwinIR, swinir_from_official, swinir_layout, unwrap_swinir_file
from varformer.errors import CheckpointMismatchError, VarformerError
from varformer.runtime import fp32_region
from varformer.varestorer.convert import convert_varestorer
from varformer.varestorer.lora import lora_infinity, merge_lora
from varformer.varestorer.settings import VARestorerSettings
from varformer.varestorer.weights import SWINIR_FILE, VAE_FILE, VARESTORER_FILE, read_weights


# record_function ranges around the parts of a forward pass (benchmark part timing)
PART_SWINIR = "varestorer.swinir"
PART_ENCODE = "varestorer.vae_encoder_pyramid"
PART_TRANSFORMER = "varestorer.transformer"
PART_DECODE = "varestorer.bits_vae_decoder"
PARTS = (PART_SWINIR, PART_ENCODE, PART_TRANSFORMER, PART_DECODE)


class VARestorerInputError(VarformerError, ValueError):
    """An input the model cannot take (wrong size, channels, dtype or text)."""


@dataclass
class SampleOutputs:
    cleaned: torch.Tensor        # (B, 3, S, S) SwinIR output (unclamped), the input itself without SwinIR
    lq_latent: torch.Tensor      # (B, 32, S/16, S/16) BSQ-VAE encoder output of 2 * cleaned - 1
    pyramid: torch.Tensor        # (B, sum pn^2 - 1 + G^2, 32) the transformer's input tokens
    logits: torch.Tensor         # (B, sum pn^2, 64) float32
    bits: List[torch.Tensor]     # per scale (B, pn, pn, 32) float in {0, 1}
    image: torch.Tensor          # (B, 3, S, S) in [0, 1]


class VARestorer(nn.Module):
    def __init__(self, depth: int = 32, embed_dim: int = 2048, num_heads: int = 16, text_channels: int = 2048,
                 text_maxlen: int = 512, lora_rank: int = 32, block_chunks: int = 8, codebook_dim: int = 32,
                 patch_nums: Sequence[int] = (1, 2, 4, 6, 8, 12, 16, 20, 24, 32), vae_base_ch: int = 128,
                 vae_ch_mult: Sequence[int] = (1, 2, 4, 4, 4), vae_num_res_blocks: int = 2, swinir: bool = True,
                 swinir_embed_dim: int = 180, swinir_depths: Sequence[int] = (6,) * 8,
                 swinir_num_heads: Sequence[int] = (6,) * 8, swinir_window: int = 8, swinir_mlp_ratio: float = 2.0,
                 swinir_num_feat: int = 64, drop_path_rate: float = 0.0, text_drop_at_inference: float = 0.0):
        super().__init__()
        s = VARestorerSettings(depth, embed_dim, num_heads, text_channels, text_maxlen, lora_rank, block_chunks,
                               codebook_dim, list(patch_nums), vae_base_ch, list(vae_ch_mult), vae_num_res_blocks,
                               swinir, swinir_embed_dim, list(swinir_depths), list(swinir_num_heads), swinir_window,
                               swinir_mlp_ratio, swinir_num_feat).validate()
        if not 0.0 <= text_drop_at_inference <= 1.0:
            raise ValueError(f"text_drop_at_inference must be in [0, 1], got {text_drop_at_inference}")
        self._settings = s
        self.image_size = s.image_size
        self.patch_nums = tuple(s.patch_nums)
        self.text_drop_at_inference = text_drop_at_inference
        self._drop_generator: Optional[torch.Generator] = None
        self.transformer = lora_infinity(lora_rank, drop_path_rate=drop_path_rate, **s.transformer_kwargs())
        self.vae = BSQVAE(**s.vae_kwargs())
        self.swinir = SwinIR(**s.swinir_kwargs()) if swinir else None

    def settings(self) -> VARestorerSettings:
        return self._settings

    def round_block_weights_to_bf16(self) -> int:
        """Round every block parameter the release stores in bf16 to bf16 values (kept in float32): the release
        casts the blocks to bf16 *before* injecting LoRA, so the wrapped weights, biases, norms, ``ada_gss`` and
        ``scale_mul`` are bf16 and the LoRA tensors float32. With this and bf16 autocast the blocks compute with the
        release's weights. Returns the number of tensors rounded."""
        n = 0
        with torch.no_grad():
            for name, p in self.transformer.named_parameters():
                if name.startswith(("block_chunks.", "blocks.")) and ".lora_" not in name:
                    p.copy_(p.to(torch.bfloat16).to(p.dtype))
                    n += 1
        return n

    def merge_lora(self) -> int:
        """Fold the LoRA adapters into the weights (inference; the keys lose ``.linear``/``.lora_*``)."""
        return merge_lora(self.transformer)

    # ------------------------------------------------------------------ checks
    def _check(self, lq01: torch.Tensor, text: Sequence[torch.Tensor]) -> None:
        S = self.image_size
        if not isinstance(lq01, torch.Tensor) or lq01.ndim != 4 or lq01.shape[1] != 3:
            got = tuple(lq01.shape) if isinstance(lq01, torch.Tensor) else type(lq01).__name__
            raise VARestorerInputError(f"expected images (B, 3, {S}, {S}) in [0, 1], got {got}")
        if tuple(lq01.shape[-2:]) != (S, S):
            raise VARestorerInputError(f"VARestorer works on {S}x{S} inputs only, got {lq01.shape[-2]}x"
                                       f"{lq01.shape[-1]}; resize (the release's protocol) or tile the image first")
        if not lq01.is_floating_point():
            raise VARestorerInputError(f"expected a float tensor in [0, 1], got {lq01.dtype}")
        C, n = self._settings.text_channels, self._settings.text_maxlen
        if isinstance(text, torch.Tensor) or len(text) != lq01.shape[0]:
            raise VARestorerInputError(f"expected a list of {lq01.shape[0]} text feature tensors (one (L_i, {C}) "
                                       "per image)")
        bad = [tuple(t.shape) for t in text if t.ndim != 2 or t.shape[1] != C or not 1 <= t.shape[0] <= n]
        if bad:
            raise VARestorerInputError(f"text features must be (L_i, {C}) with 1 <= L_i <= {n} (T5 rows of the "
                                       f"prompt), got {bad}")

    # ------------------------------------------------------------------ pieces
    def clean(self, lq01: torch.Tensor) -> torch.Tensor:
        """SwinIR's output (float32, unclamped, contiguous), or the input without SwinIR."""
        with fp32_region(lq01.device):
            x = lq01.float().contiguous()
            if self.swinir is None:
                return x
            # the release's own arithmetic: its input is 2x - 1, mapped back by (lq + 1) / 2 (equal to x or an ulp off)
            return self.swinir(((x * 2 - 1) + 1) / 2)

    def encode(self, cleaned01: torch.Tensor) -> torch.Tensor:
        with fp32_region(cleaned01.device):
            return self.vae.encode(cleaned01.float() * 2 - 1)

    def text_condition(self, text: Sequence[torch.Tensor], generator: Optional[torch.Generator]) -> PaddedText:
        padded = PaddedText.from_list(list(text), device=self.transformer.pos_start.device)
        p = self.text_drop_at_inference
        if p <= 0:
            return padded
        if generator is None:
            if self._drop_generator is None:
                self._drop_generator = torch.Generator().manual_seed(0)
            generator = self._drop_generator
        drop = torch.rand(len(text), generator=generator) < p
        return self.transformer.drop_text(padded, drop)

    def decode_bits(self, bits: Sequence[torch.Tensor]) -> torch.Tensor:
        """Per-scale bits (B, pn, pn, 32) in {0, 1} -> (B, 3, S, S) in [0, 1]: codes, upsampled sum, decoder,
        clamp."""
        if len(bits) != len(self.patch_nums):
            raise VARestorerInputError(f"expected {len(self.patch_nums)} bit maps (one per scale), got {len(bits)}")
        with fp32_region(bits[0].device):
            z = summed_codes([b.float() for b in bits], self.patch_nums)
            return self.vae.decode(z).add(1).mul(0.5)

    def _sample(self, lq01, text, argmax_bits: bool, generator: Optional[torch.Generator]) -> SampleOutputs:
        with record_function(PART_SWINIR):
            cleaned = self.clean(lq01)
        with record_function(PART_ENCODE):
            lq_latent = self.encode(cleaned)
            with fp32_region(lq01.device):
                pyramid, _ = residual_pyramid(lq_latent, self.patch_nums, long_input=True)
        with record_function(PART_TRANSFORMER):
            logits = self.transformer(self.text_condition(text, generator), pyramid)
        with record_function(PART_DECODE):
            with fp32_region(lq01.device):
                bits = sample_bits(logits, self.patch_nums, argmax=argmax_bits)
            image = self.decode_bits(bits)
        return SampleOutputs(cleaned, lq_latent, pyramid, logits, bits, image)

    # ------------------------------------------------------------------ public calls
    def forward(self, lq01: torch.Tensor, text: Sequence[torch.Tensor], argmax_bits: bool = False,
                text_drop_generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """(B, 3, S, S) in [0, 1] + per-image text features -> restored (B, 3, S, S) in [0, 1], one step, under
        ``torch.inference_mode``."""
        self._check(lq01, text)
        with torch.inference_mode():
            return self._sample(lq01, text, argmax_bits, text_drop_generator).image

    def sample_outputs(self, lq01: torch.Tensor, text: Sequence[torch.Tensor], argmax_bits: bool = False,
                       text_drop_generator: Optional[torch.Generator] = None) -> SampleOutputs:
        """Every intermediate of the forward pass (no autograd graph)."""
        self._check(lq01, text)
        with torch.no_grad():
            return self._sample(lq01, text, argmax_bits, text_drop_generator)

    # ------------------------------------------------------------------ official weights
    @classmethod
    def from_official(cls, model_sd_or_path, vae_sd_or_path, swinir_sd_or_path=None, map_location="cpu",
                      patch_nums: Sequence[int] = (1, 2, 4, 6, 8, 12, 16, 20, 24, 32), text_maxlen: int = 512,
                      text_drop_at_inference: float = 0.0) -> "VARestorer":
        """The released model from ``varestorer.pth`` + ``infinity_vae_d32reg.pth`` (+ ``general_swinir_v1.ckpt``;
        None: no pre-cleaning), state dicts or paths, sizes read from the tensors; built on the meta device with
        every tensor assigned; eval mode. Strict, per file (one ``CheckpointMismatchError`` line naming the file):

        - ``varestorer.pth``: every tensor of the LoRA-injected transformer with its shape, nothing else except the
          constant buffers: ``*.zero_k_bias`` (must be zero) and ``lvl_1L``, ``attn_bias_for_masking``,
          ``Infinity_visible_kvlen``, ``Infinity_invisible_qlen`` (dropped, as the official loader does);
          ``cfg_uncond`` trimmed to ``text_maxlen`` rows as the official loader trims it;
        - ``infinity_vae_d32reg.pth``: its ``"vae"`` entry (the ``"ema"`` one is not used) or a bare state dict,
          every encoder/decoder tensor in the ``*.conv.*``/``*.norm.*`` layout or the plain one, nothing else but
          the ``quantizer.lfq.mask`` buffer (checked);
        - ``general_swinir_v1.ckpt``: its ``"state_dict"`` entry or a bare state dict, ``module.`` prefixes removed,
          every tensor of the SwinIR, its ``relative_position_index`` / ``attn_mask`` buffers checked against ours.
        """
        raw, model_src = read_weights(model_sd_or_path, VARESTORER_FILE, map_location)
        cfg, state_dict = convert_varestorer(raw, text_maxlen, model_src)
        raw, vae_src = read_weights(vae_sd_or_path, VAE_FILE, map_location)
        vae_sd = bsq_vae_from_official(unwrap_vae_file(raw, vae_src), vae_src)
        vae = bsq_vae_layout(vae_sd, vae_src)
        if vae["z_channels"] != cfg["codebook_dim"]:
            raise CheckpointMismatchError(f"{vae_src}: a {vae['z_channels']}-channel VAE for a transformer of "
                                          f"{cfg['codebook_dim']} bits per token")
        state_dict.update({f"vae.{k}": v for k, v in vae_sd.items()})
        swin: Dict[str, object] = {"swinir": False}
        sources = {"transformer": model_src, "vae": vae_src}
        if swinir_sd_or_path is not None:
            raw, swin_src = read_weights(swinir_sd_or_path, SWINIR_FILE, map_location)
            sw_sd = unwrap_swinir_file(raw)
            lay = swinir_layout(sw_sd)
            if lay.pop("unshuffle_scale") != 8:
                raise CheckpointMismatchError(f"{swin_src}: not the unshuffle-8 SwinIR of general_swinir_v1.ckpt")
            state_dict.update({f"swinir.{k}": v for k, v in swinir_from_official(sw_sd, lay["window"]).items()})
            swin = {"swinir": True, **{f"swinir_{k}": v for k, v in lay.items()}}
            sources["swinir"] = swin_src
        settings = VARestorerSettings(**cfg, text_maxlen=text_maxlen, patch_nums=list(patch_nums),
                                      vae_base_ch=vae["base_ch"], vae_ch_mult=vae["ch_mult"],
                                      vae_num_res_blocks=vae["num_res_blocks"], **swin).validate()
        with torch.device("meta"):
            model = cls(**settings.constructor_kwargs(), text_drop_at_inference=text_drop_at_inference)
        load_parts(model, state_dict, sources)
        return model.eval()


def load_parts(model: VARestorer, state_dict: Dict[str, torch.Tensor], sources: Dict[str, str]) -> None:
    """Strict assign-load, the keys of each part checked against its file first (the error names the file)."""
    own = model.state_dict()
    for part, source in sources.items():
        mine = {k: v for k, v in own.items() if k.startswith(part + ".")}
        theirs = {k: v for k, v in state_dict.items() if k.startswith(part + ".")}
        mismatch = key_mismatch(mine, theirs)
        if mismatch:
            raise CheckpointMismatchError(" ".join([f"{source} does not fit VARestorer's {part}:", *mismatch]))
    mismatch = key_mismatch(own, state_dict)
    if mismatch:
        raise CheckpointMismatchError(" ".join(["the VARestorer state dict does not fit the model:", *mismatch]))
    model.load_state_dict(state_dict, strict=True, assign=True)
    check_filled(model, ", ".join(sources.values()))
