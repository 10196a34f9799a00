"""Infinity's 2-D RoPE, attentions, attentive text pool and block against the naive formulas of
infinity_reference (explicit softmax of q k^T, complex pair rotations, exact-fraction positions)."""
from fractions import Fraction

import infinity_reference as ref
import pytest
import torch

from varformer.backbone.infinity.attention import InfinitySelfAttention, TextCrossAttention
from varformer.backbone.infinity.blocks import InfinityBlock, ffn_hidden
from varformer.backbone.infinity.rope2d import (SCHEDULE_025M, SCHEDULE_1M, apply_rope2d, rope2d_positions,
                                                rope2d_table)
from varformer.backbone.infinity.text_pool import PaddedText, TextAttentivePool


def randomise(module, seed=0, scale=0.2):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            p.copy_(scale * torch.randn(p.shape, generator=g) + (1.0 if name.endswith("norm.weight") else 0.0))
    return module


def test_rope_positions_follow_the_1m_schedule_and_the_long_block_takes_the_40x40_rows():
    rows, cols = rope2d_positions(SCHEDULE_1M)
    naive = ref.rope_positions()
    assert rows.shape == (10521,)
    assert [(int(r), int(c)) for r, c in zip(rows, cols)] == naive
    # the 0.25M schedule's 2,521 tokens are the first rows; the long input's extra 32x32 block (1,024 tokens)
    # reads the next 1,024 rows: the first 1,024 tokens of the 40x40 scale, not its own 32x32 grid (D3)
    assert sum(p * p for p in SCHEDULE_025M) == 2521
    for t in (0, 1, 39, 40, 41, 500, 1023):
        assert (int(rows[2521 + t]), int(cols[2521 + t])) == (round(Fraction(t // 40 * 8, 5)),
                                                              round(Fraction(t % 40 * 8, 5)))
    own = naive[2521 - 1024:2521]                # the 32x32 scale's own positions (2i, 2j)
    assert own[41] == (2, 18) and naive[2521 + 41] == (2, 2) and naive[2521 + 40] == (2, 0)   # (1, 9) vs (1, 1)
    assert sum(naive[2521 + t] != own[t] for t in range(1024)) > 900


def test_rope_table_and_rotation_match_the_naive_pair_rotation():
    cos, sin = rope2d_table(64)
    assert cos.shape == sin.shape == (10521, 32) and cos.dtype == torch.float32
    angles = ref.rope_angles(64, ref.rope_positions())
    assert torch.allclose(cos.double(), angles.cos(), atol=2e-5) and torch.allclose(sin.double(), angles.sin(),
                                                                                     atol=2e-5)
    q, k = torch.randn(2, 3, 50, 64), torch.randn(2, 3, 50, 64)
    rq, rk = apply_rope2d(q, k, cos[:50], sin[:50])
    assert torch.allclose(rq.double(), ref.rotate(q, angles[:50]), atol=1e-4)
    assert torch.allclose(rk.double(), ref.rotate(k, angles[:50]), atol=1e-4)
    assert torch.allclose(rq.norm(dim=-1), q.norm(dim=-1), atol=1e-4)          # a rotation
    assert torch.equal(rq[:, :, 0], q[:, :, 0])                                # the start token: angle 0
    with pytest.raises(ValueError, match="do not fit"):
        apply_rope2d(q, k, cos[:49], sin[:49])


def test_rope_table_builds_under_fake_tensors_and_refuses_a_schedule_beyond_its_grid():
    # the full-size benchmark counts FLOPs on fake tensors: building the table there must not read a value
    from torch._subclasses.fake_tensor import FakeTensorMode
    with FakeTensorMode():
        cos, sin = rope2d_table(64)
    assert cos.shape == sin.shape == (10521, 32)
    with pytest.raises(ValueError, match="reaches position 63, beyond the 32 grid"):
        rope2d_table(64, SCHEDULE_1M, grid=32)
    assert rope2d_table(64, SCHEDULE_1M, grid=64)[0].shape == (10521, 32)   # positions up to 63 fit a 64 grid


@pytest.mark.parametrize("causal", [False, True])
def test_self_attention_is_cosine_attention_with_clamped_scale_and_rope(causal):
    C, H, L = 64, 2, 21
    att = randomise(InfinitySelfAttention(C, H))
    with torch.no_grad():
        att.scale_mul_1H11[0, 0] = 6.0              # above ln 100: clamped
    sd = {k: v.detach() for k, v in att.state_dict().items()}
    sd = {"sa." + k: v for k, v in sd.items()}
    x = torch.randn(2, L, C)
    level = torch.cat([torch.full((n,), i) for i, n in enumerate((1, 4, 16))])
    allowed = level[:, None] >= level[None, :]
    cos, sin = rope2d_table(C // H)
    with torch.no_grad():
        ours = att(x, (cos, sin), allowed if causal else None)
    angles = ref.rope_angles(C // H, ref.rope_positions()[:L])
    naive = ref.self_attention(x.double(), sd, "sa.", H, angles, allowed if causal else None)
    assert torch.allclose(ours.double(), naive, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("value_bias", [True, False])
def test_text_cross_attention_sees_each_images_own_rows_only(value_bias):
    C, H = 64, 4
    ca = randomise(TextCrossAttention(C, 48, H))
    ca.use_value_bias = value_bias
    sd = {"ca." + k: v.detach() for k, v in ca.state_dict().items()}
    rows = [torch.randn(5, 48), torch.randn(2, 48)]
    text = PaddedText.from_list(rows)
    x = torch.randn(2, 7, C)
    with torch.no_grad():
        ours = ca(x, text.features_BTC, text.mask_BT)
    naive = ref.cross_attention(x.double(), [r.double() for r in rows], sd, "ca.", H, value_bias)
    assert torch.allclose(ours.double(), naive, atol=1e-5)
    # D2: the value bias changes the output (so dropping it is visible)
    ca.use_value_bias = not value_bias
    with torch.no_grad():
        assert not torch.allclose(ca(x, text.features_BTC, text.mask_BT), ours, atol=1e-3)


def test_attentive_pool_has_text_channels_over_128_heads_and_matches_the_naive_pool():
    pool = randomise(TextAttentivePool(256, 96))
    assert pool.ca.mat_q.shape == (1, 2, 48)                      # 256 // 128 heads of 96 // 2 channels
    rows = [torch.randn(3, 256), torch.randn(6, 256)]
    text = PaddedText.from_list(rows)
    sd = {"p." + k: v.detach() for k, v in pool.state_dict().items()}
    with torch.no_grad():
        ours = pool(text.features_BTC, text.mask_BT)
    assert ours.shape == (2, 96)
    assert torch.allclose(ours.double(), ref.attentive_pool([r.double() for r in rows], sd, "p.ca."), atol=1e-5)
    with pytest.raises(ValueError, match="multiple of 128"):
        TextAttentivePool(100, 96)


def test_padded_text_refuses_empty_and_mixed_widths():
    with pytest.raises(ValueError, match="L_i >= 1"):
        PaddedText.from_list([torch.randn(0, 8)])
    with pytest.raises(ValueError, match="one C"):
        PaddedText.from_list([torch.randn(2, 8), torch.randn(2, 9)])


def test_block_matches_the_naive_block_and_its_mlp_width_rule():
    assert ffn_hidden(2048) == 8192 and ffn_hidden(256) == 1024 and ffn_hidden(200) == 768
    C, H, L = 64, 2, 21
    blk = randomise(InfinityBlock(C, H, C), scale=0.1).eval()
    sd = {"b." + k: v.detach() for k, v in blk.state_dict().items()}
    x = torch.randn(2, L, C)
    gss = 0.1 * torch.randn(2, 1, 6, C)
    rows = [torch.randn(4, C), torch.randn(1, C)]
    text = PaddedText.from_list(rows)
    cos, sin = rope2d_table(C // H)
    with torch.no_grad():
        ours = blk(x, gss, text.features_BTC, text.mask_BT, (cos, sin), None)
    angles = ref.rope_angles(C // H, ref.rope_positions()[:L])
    naive = ref.block(x.double(), gss.double(), [r.double() for r in rows], sd, "b.", H, angles, None)
    assert torch.allclose(ours.double(), naive, atol=2e-4, rtol=1e-4)

