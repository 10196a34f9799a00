"""The pieces of VARestorer's one-step distillation loss (docs/varestorer.md, "Training (reconstructed)"): the two
transformer passes, the bitwise KL between teacher and student, the cross-entropy of the "no distillation"
ablation, and the straight-through decode that carries pixel losses back to the student's logits.

Bitwise distributions: Infinity's head gives 64 logits per token, read as (32, 2): the two logits of each of the
32 bits. A token's distribution is the product of 32 Bernoullis, so the KL of two such distributions is the sum of
the 32 binary KLs, and the KL of a scale (independent tokens) the sum over its tokens:

    L_KL = sum_k KL(p_T(r_k | r_HQ,<k) || p_S(r_k | r_LQ))          (the project page's formula)
         = sum over scales, tokens and bits of  sum_c p_T(c) (log p_T(c) - log p_S(c))

``reduction`` says how the sum over (tokens, bits) is normalised: ``sum`` (the formula literally, per image),
``mean`` (divided by L x d: Infinity's own cross-entropy is a mean over all tokens and bits) or ``scale_mean``
(a mean inside each scale, summed over the scales: every scale counts alike).

    logits_T = transformer_logits(teacher, text, x_tf, attention_mask(..., "block_causal"))
    logits_S = transformer_logits(student, text, x_long, None)
    kl = bitwise_kl(logits_T, logits_S, patch_nums, "mean", teacher_temperature=1.0)
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import torch
import torch.nn.functional as F

from varformer.backbone.infinity.bit_sampling import gumbel_one_hot, split_scales
from varformer.backbone.infinity.text_pool import PaddedText
from varformer.backbone.infinity.transformer import Infinity, scale_index

REDUCTIONS = ("mean", "sum", "scale_mean")


def attention_mask(patch_nums: Sequence[int], long_input: bool, block_causal: bool,
                   device: torch.device) -> Optional[torch.Tensor]:
    """None (full attention: the released student) or the (N, N) boolean block-causal mask (True: may attend):
    a token of scale k sees the scales <= k; with the long input the extra block is scale K, so it sees everything
    and nothing sees it but itself (the "no cross-scale attention" ablation)."""
    if not block_causal:
        return None
    d = scale_index(patch_nums, long_input).to(device)
    return d[:, None] >= d[None, :]


def transformer_logits(model: Infinity, text: PaddedText, x_BLCv: torch.Tensor,
                       attn_mask: Optional[torch.Tensor]) -> torch.Tensor:
    """``Infinity.forward`` with the attention mask given rather than decided by the input length: logits
    (B, L, 2d) float32 of the first L positions. ``x_BLCv`` is the teacher-forcing input (L - 1 tokens) or the
    long input (L - 1 + G^2)."""
    n = x_BLCv.shape[1] + 1
    if n not in (model.L, model.long_length):
        raise ValueError(f"expected {model.L - 1} or {model.long_length - 1} input tokens, got {x_BLCv.shape[1]}")
    cond_BD, gss, kv_BTC = model.condition(text)
    x = model.embed(x_BLCv, cond_BD, long_input=n == model.long_length)
    rope = model.rope(x.device)
    for blk in model.iter_blocks():
        x = blk(x, gss, kv_BTC, text.mask_BT, rope, attn_mask)
    return model.logits(x[:, :model.L], cond_BD)


def bit_pairs(logits_BLV: torch.Tensor) -> torch.Tensor:
    """(B, L, 2d) -> (B, L, d, 2) float32: the two logits of every bit."""
    B, L, V = logits_BLV.shape
    return logits_BLV.float().reshape(B, L, V // 2, 2)


def reduce_per_bit(loss_BLd: torch.Tensor, patch_nums: Sequence[int], reduction: str) -> torch.Tensor:
    """A per-(image, token, bit) loss -> a scalar, by ``reduction`` (module doc); always a mean over images."""
    if reduction == "mean":
        return loss_BLd.mean()
    if reduction == "sum":
        return loss_BLd.sum() / loss_BLd.shape[0]
    if reduction == "scale_mean":
        return sum(part.mean() for part in split_scales(loss_BLd, patch_nums))
    raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")


def bitwise_kl_per_bit(teacher_BLV: torch.Tensor, student_BLV: torch.Tensor,
                       teacher_temperature: float = 1.0) -> torch.Tensor:
    """(B, L, d) binary KL(p_T || p_S) of every bit; the teacher's logits are divided by its temperature."""
    log_t = F.log_softmax(bit_pairs(teacher_BLV) / teacher_temperature, dim=-1)
    log_s = F.log_softmax(bit_pairs(student_BLV), dim=-1)
    return (log_t.exp() * (log_t - log_s)).sum(-1)


def bitwise_kl(teacher_BLV: torch.Tensor, student_BLV: torch.Tensor, patch_nums: Sequence[int], reduction: str,
               teacher_temperature: float = 1.0) -> torch.Tensor:
    return reduce_per_bit(bitwise_kl_per_bit(teacher_BLV, student_BLV, teacher_temperature), patch_nums, reduction)


def flat_bits(bits: Sequence[torch.Tensor]) -> torch.Tensor:
    """Per-scale bits (B, pn, pn, d) -> (B, L, d), tokens row-major per scale, coarse to fine (the logits' order)."""
    return torch.cat([b.reshape(b.shape[0], -1, b.shape[-1]) for b in bits], dim=1)


def bitwise_cross_entropy(student_BLV: torch.Tensor, target_bits_BLd: torch.Tensor, patch_nums: Sequence[int],
                          reduction: str) -> torch.Tensor:
    """Cross-entropy of the student's bits against given bits (the HQ image's): Infinity's own training loss, the
    "no distillation" ablation."""
    pairs = bit_pairs(student_BLV)
    ce = F.cross_entropy(pairs.reshape(-1, 2), target_bits_BLd.reshape(-1).long(), reduction="none")
    return reduce_per_bit(ce.view(target_bits_BLd.shape), patch_nums, reduction)


def bit_accuracy(logits_BLV: torch.Tensor, target_bits_BLd: torch.Tensor) -> torch.Tensor:
    """Share of the argmax bits equal to the target bits."""
    return (bit_pairs(logits_BLV.detach()).argmax(-1) == target_bits_BLd.long()).float().mean()


def straight_through_bits(logits_BLV: torch.Tensor, patch_nums: Sequence[int], tau: float) -> List[torch.Tensor]:
    """Per scale (B, pn, pn, d) bits drawn as the release draws them (one ``torch.rand`` per scale on the CPU
    generator, Gumbel-argmax: an exact Bernoulli(softmax) sample), with the straight-through gradient of the
    tempered soft sample: ``y_hard - y_soft.detach() + y_soft`` (official ``BInfinity.logits_to_img``)."""
    B = logits_BLV.shape[0]
    out = []
    for logits, pn in zip(split_scales(logits_BLV.float(), patch_nums), patch_nums):
        one_hot = gumbel_one_hot(logits.reshape(B, -1, 2), tau=tau, straight_through=True)
        out.append(one_hot[..., 1].reshape(B, pn, pn, -1))
    return out
