"""The distillation's loss pieces (varformer/varestorer/distill_losses.py) against their formulas, and the two
transformer passes (masks, inputs) on the reduced model."""
import pytest
import torch
from distill_testutils import SETTINGS, batch, task

from varformer.backbone.infinity.bit_sampling import sample_bits
from varformer.varestorer.distill_losses import (attention_mask, bitwise_cross_entropy, bitwise_kl,
                                                 bitwise_kl_per_bit, flat_bits, reduce_per_bit, transformer_logits)

PN = tuple(SETTINGS.patch_nums)
L = sum(p * p for p in PN)


def _logits(seed, B=2):
    return torch.randn(B, L, 2 * SETTINGS.codebook_dim, generator=torch.Generator().manual_seed(seed)) * 2


def test_kl_is_the_sum_of_binary_kls():
    t, s = _logits(0), _logits(1)
    td, sd = t.double(), s.double()                           # the reference in float64
    p = torch.sigmoid(td[..., 1::2] - td[..., 0::2])          # P(bit = 1) from the pair (l0, l1)
    q = torch.sigmoid(sd[..., 1::2] - sd[..., 0::2])
    ref = (p * torch.log(p / q) + (1 - p) * torch.log((1 - p) / (1 - q))).float()       # (B, L, 32)
    assert torch.allclose(bitwise_kl_per_bit(t, s), ref, atol=1e-5)
    assert torch.allclose(bitwise_kl(t, s, PN, "sum"), ref.sum() / 2, rtol=1e-5)
    assert torch.allclose(bitwise_kl(t, s, PN, "mean"), ref.mean(), rtol=1e-5)
    per_scale = sum(ref[:, a:a + p * p].mean() for a, p in zip([0, 1, 5], PN))
    assert torch.allclose(bitwise_kl(t, s, PN, "scale_mean"), per_scale, rtol=1e-5)
    assert float(bitwise_kl(t, t, PN, "sum")) == pytest.approx(0.0, abs=1e-6)
    # the teacher's temperature divides its logits only
    p2 = torch.sigmoid((td[..., 1::2] - td[..., 0::2]) / 2.0)
    ref2 = (p2 * torch.log(p2 / q) + (1 - p2) * torch.log((1 - p2) / (1 - q))).float()
    assert torch.allclose(bitwise_kl_per_bit(t, s, teacher_temperature=2.0), ref2, atol=1e-5)
    with pytest.raises(ValueError, match="reduction"):
        reduce_per_bit(ref, PN, "median")


def test_cross_entropy_on_given_bits():
    s = _logits(2)
    bits = flat_bits(sample_bits(_logits(3), PN, argmax=True))
    q = torch.sigmoid(s.double()[..., 1::2] - s.double()[..., 0::2])
    ref = -(bits * torch.log(q) + (1 - bits) * torch.log(1 - q)).float()
    assert torch.allclose(bitwise_cross_entropy(s, bits, PN, "mean"), ref.mean(), rtol=1e-5)
    # the bits' order is the logits' order: per scale row-major (B, pn, pn, d) -> (B, pn*pn, d)
    per_scale = [torch.arange(2 * p * p * 3).reshape(2, p, p, 3) for p in PN]
    assert torch.equal(flat_bits(per_scale)[:, 1:5], per_scale[1].reshape(2, 4, 3))


def test_kl_is_zero_when_the_student_is_the_teacher():
    """Fresh LoRA (up = 0) on the teacher's own weights, the same teacher-forcing input and mask: the same logits,
    KL 0. The student's text cross-attention drops the value bias (the release, D2), so it is zeroed here; with it,
    or with trained LoRA, the KL is positive."""
    t = task()
    b = batch()
    text, _, _ = t._texts(b["caption"], torch.device("cpu"))
    x_tf, _, _ = t.pyramids(b["lq"], b["gt"])
    mask = attention_mask(PN, False, True, x_tf.device)
    for blk in t.model.transformer.iter_blocks():
        torch.nn.init.normal_(blk.ca.v_bias, std=0.5)
    with torch.no_grad():
        teacher = t.teacher_logits(text, x_tf)
        student = transformer_logits(t.model.transformer, text, x_tf, mask)
        assert float(bitwise_kl(teacher, student, PN, "sum")) > 1e-4           # the value bias differs
        for blk in t.model.transformer.iter_blocks():
            blk.ca.v_bias.zero_()                       # shared: the teacher's too
        teacher = t.teacher_logits(text, x_tf)
        student = transformer_logits(t.model.transformer, text, x_tf, mask)
        assert torch.equal(teacher, student)
        assert float(bitwise_kl(teacher, student, PN, "sum")) == 0.0
        blk = t.model.transformer.iter_blocks()[0]
        torch.nn.init.normal_(blk.sa.proj.lora_up.weight, std=0.1)
        student = transformer_logits(t.model.transformer, text, x_tf, mask)
        assert float(bitwise_kl(teacher, student, PN, "sum")) > 1e-4


def test_masks_and_cross_scale_attention():
    """Block-causal long input: a scale sees itself and coarser scales, the extra block sees everything and only
    itself sees it; full attention (the released student) lets coarse scales read the extra block."""
    m = attention_mask(PN, True, True, torch.device("cpu"))
    n = L + PN[-1] ** 2
    assert m.shape == (n, n) and attention_mask(PN, True, False, torch.device("cpu")) is None
    assert bool(m[L:].all()) and not bool(m[:L, L:].any()) and bool(m[1:5, 0:5].all()) and not bool(m[0, 1:].any())
    t = task()
    b = batch()
    text, _, _ = t._texts(b["caption"], torch.device("cpu"))
    _, _, x_long = t.pyramids(b["lq"], b["gt"])
    bumped = x_long.clone()
    bumped[:, L - 1:] += 1.0                              # the extra block (the LQ latent itself)
    with torch.no_grad():
        for causal, changes in ((True, False), (False, True)):
            mask = attention_mask(PN, True, causal, x_long.device)
            a = transformer_logits(t.model.transformer, text, x_long, mask)
            c = transformer_logits(t.model.transformer, text, bumped, mask)
            assert (not torch.equal(a[:, 0], c[:, 0])) == changes


def test_student_sees_the_long_lq_pyramid_and_teacher_the_hq_one():
    """The long input's first L - 1 tokens are the teacher-forcing input of the same latent: the LQ's (after
    SwinIR when preclean_lq), while the teacher's come from the GT."""
    b = batch()
    for preclean in (False, True):
        t = task(preclean_lq=preclean)
        x_tf, hq_bits, x_long = t.pyramids(b["lq"], b["gt"])
        assert x_tf.shape == (2, L - 1, 32) and x_long.shape == (2, L - 1 + PN[-1] ** 2, 32)
        assert hq_bits.shape == (2, L, 32) and not torch.allclose(x_tf, x_long[:, :L - 1])
        x_tf_of_lq, _, _ = t.pyramids(b["lq"], b["lq"])
        assert torch.allclose(x_tf_of_lq, x_long[:, :L - 1], atol=1e-6) == (not preclean)
