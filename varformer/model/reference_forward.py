"""The official-style reference path of VarFormer's benchmark (``varformer benchmark model``, through the
``ReferencePath`` of its ``BenchmarkEntry``).

The official repository cannot run here (and is not copied), so the reference is ``official_style_forward``: the
same modules and weights run the way the official test code runs them (docs/official-differences.md): float32,
``torch.no_grad`` instead of ``inference_mode``, PyTorch's default linear kernels (not ``varformer.ops``' oneDNN
path), the VAR loop on the full doubled CFG batch from the first block on (cross-attention queries computed per
row, AdaLN modulation at every scale: ``greedy_rollout(share_halves=False)``), and the whole frozen VQVAE decoder
on ``f_hat`` (its full-resolution level and RGB output computed and discarded). Its output must equal the model's
to float rounding (the benchmark reports the largest difference). Not reproduced, so the reference is *faster* than
the real official code: its explicit (non-SDPA) attention maps in the AFT and Swin blocks, the autograd graph its
test script keeps (no ``no_grad`` at all), and its 1x1 conv + single-channel softmax of the residual weight.
"""
from __future__ import annotations

import torch

from varformer import ops
from varformer.model.prior_rollout import greedy_rollout
from varformer.model.settings import VarFormerSettings
from varformer.model.varformer import VarFormer

DESCRIPTION = ("the same modules and weights run as the official test code runs them: fp32, no_grad, PyTorch's "
               "default linear kernels, doubled CFG batch from block 0, full VQVAE decoder (RGB discarded)")


def has_reference(settings: VarFormerSettings) -> bool:
    """The reference covers the released layout: stage 2, official head layout, cross-attention, no alignment."""
    return settings.stage == 2 and settings.head_layout == "official" and settings.n_cross > 0 \
        and not settings.dec_adjust


def official_style_forward(model: VarFormer, lq_B3HW: torch.Tensor) -> torch.Tensor:
    """The model run the way the official test code runs it (see the module docstring); [0, 1] in and out."""
    m = model
    if not has_reference(m.settings()):
        raise ValueError("the official-style reference covers the released layout: official head layout, "
                         "cross-attention blocks, no decoder alignment")
    with torch.no_grad(), ops.aten_linear():
        x = (lq_B3HW.float() - 0.5) / 0.5
        z, enc_feats, _ = m.vae.encoder.forward_features(x)
        f_a = m.adapter(m.vae.quant_conv(z))
        idx_lq, _ = m.vae.f_to_indices_and_fhats(f_a)
        r = greedy_rollout(m.var, m.cross_attn, m.vae.indices_to_var_input(idx_lq), m.cfg, m.head_layout,
                           share_halves=False)
        h, skips, _ = m.unet_encoder(x, r.priors, enc_feats)
        y = m.vae.quant_conv(h)
        _rgb, dec_feats, dz = m.vae.decoder.forward_features(m.vae.post_quant_conv(r.f_hat))  # RGB discarded
        n, _ = m.unet_decoder(y, skips, r.priors, dz, dec_feats)
        w = m.input_weight
        out = ((1 - w) * n + w * x).clamp(-1, 1)
    return out.add(1).mul(0.5).clamp(0, 1)
