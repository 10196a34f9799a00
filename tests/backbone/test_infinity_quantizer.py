"""BSQ, the multi-scale residual pyramid, codes from bits and the bit sampler against the loop written out in
infinity_reference and the release's random draws reproduced by hand."""
import math

import infinity_reference as ref
import pytest
import torch

from varformer.backbone.infinity import codes_from_bits, residual_pyramid, sample_bits, summed_codes
from varformer.backbone.infinity.bit_sampling import split_scales
from varformer.backbone.infinity.bsq_quantizer import bsq_quantize

PN = (1, 2, 4, 6, 8)


def test_bsq_is_the_sign_of_the_unit_vector_over_sqrt_d():
    z = torch.randn(3, 32, 1, 4, 5)
    q, bits = bsq_quantize(z)
    assert q.shape == z.shape and bits.shape == (3, 1, 4, 5, 32) and bits.dtype == torch.bool
    assert torch.allclose(q.abs(), torch.full_like(q, 1 / math.sqrt(32)))
    assert torch.equal(bits, (z > 0).movedim(1, -1)) and torch.equal(q > 0, z > 0)
    z.requires_grad_(True)
    bsq_quantize(z)[0].sum().backward()               # straight-through: the gradient of the unit vector
    assert z.grad is not None and z.grad.abs().sum() > 0


@pytest.mark.parametrize("long_input", [False, True])
def test_residual_pyramid_equals_the_loop_written_out(long_input):
    h = torch.randn(2, 32, 8, 8) * 3
    ours, bits = residual_pyramid(h, PN, long_input)
    naive, naive_bits = ref.pyramid(h, PN, long_input)
    n = sum(p * p for p in PN) - 1 + (64 if long_input else 0)
    assert ours.shape == naive.shape == (2, n, 32)
    assert torch.allclose(ours.double(), naive, atol=1e-5)
    assert all(torch.equal(a, b) for a, b in zip(bits, naive_bits))
    if long_input:        # the extra block is the whole quantised latent: the decoder input of the LQ bits
        assert torch.allclose(ours[:, -64:], summed_codes([b.float() for b in bits], PN).flatten(2).transpose(1, 2),
                              atol=1e-6)
    with pytest.raises(ValueError, match="does not end the schedule"):
        residual_pyramid(torch.randn(1, 32, 6, 6), PN, long_input)


def test_512_px_pyramid_has_3544_tokens():
    pn = (1, 2, 4, 6, 8, 12, 16, 20, 24, 32)
    x, bits = residual_pyramid(torch.randn(1, 32, 32, 32), pn, True)
    assert x.shape == (1, 3544, 32) and [b.shape[1] for b in bits] == list(pn)


def test_codes_from_bits_and_the_summed_decoder_input():
    bits = [torch.randint(0, 2, (2, p, p, 32)).float() for p in PN]
    codes = codes_from_bits(bits[1])
    assert codes.shape == (2, 32, 1, 2, 2)
    s = 1 / math.sqrt(32)
    assert torch.allclose(codes, (bits[1] * 2 * s - s).movedim(-1, 1)[:, :, None], atol=1e-7)   # +-s: unit norm
    total = summed_codes(bits, PN)
    naive = sum(torch.nn.functional.interpolate(codes_from_bits(b)[:, :, 0], size=(8, 8), mode="bilinear",
                                                align_corners=False) for b in bits)
    assert total.shape == (2, 32, 8, 8) and torch.allclose(total, naive, atol=1e-6)
    with pytest.raises(ValueError, match="bit maps"):
        summed_codes(bits[:-1], PN)


def test_sampled_bits_are_the_releases_gumbel_draws_in_order():
    B, L = 2, sum(p * p for p in PN)
    logits = torch.randn(B, L, 64) * 2
    torch.manual_seed(123)
    ours = sample_bits(logits, PN)
    after = torch.get_rng_state()
    torch.manual_seed(123)
    for k, (lg, p) in enumerate(zip(split_scales(logits, PN), PN)):
        U = torch.rand((B, p * p * 32, 2))                       # one draw per scale, coarse to fine
        g = -torch.log(-torch.log(U + 1e-20) + 1e-20)
        pairs = lg.reshape(B, -1, 2)
        bit = ((pairs + g)[..., 1] > (pairs + g)[..., 0]).float()
        assert torch.equal(ours[k], bit.reshape(B, p, p, 32)), k
    assert torch.equal(torch.get_rng_state(), after)            # nothing else was drawn
    assert torch.equal(sample_bits(logits, PN, argmax=True)[2], (logits[:, 5:21].reshape(B, 16, 32, 2)
                                                                 .argmax(-1).reshape(B, 4, 4, 32).float()))


def test_bit_frequencies_follow_the_softmax():
    # bit j of a position is 1 with probability softmax(l0, l1)[1]
    logits = torch.zeros(1, 1, 64)
    logits[0, 0, 1::2] = torch.linspace(-2, 2, 32)
    torch.manual_seed(0)
    freq = torch.stack([sample_bits(logits.expand(1, 1, 64), (1,))[0].flatten() for _ in range(2000)]).mean(0)
    assert torch.allclose(freq, torch.sigmoid(torch.linspace(-2, 2, 32)), atol=0.05)


def test_straight_through_bits_equal_the_hard_bits_and_carry_gradients():
    logits = torch.randn(1, 21, 64, requires_grad=True)
    torch.manual_seed(5)
    hard = sample_bits(logits.detach(), (1, 2, 4))
    torch.manual_seed(5)
    soft = sample_bits(logits, (1, 2, 4), straight_through=True)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(hard, soft))
    sum(s.sum() for s in soft).backward()
    assert logits.grad.abs().sum() > 0
