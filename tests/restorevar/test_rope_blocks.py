"""The 2-D RoPE tables and the no-AdaLN RoPE blocks against naive formulas (restorevar_reference)."""
import math

import pytest
import torch
import restorevar_reference as ref

from varformer.backbone.rope import apply_rope, grid_rope_table, pyramid_positions, pyramid_rope_table
from varformer.backbone.rope_blocks import RoPECrossAttention, RoPESelfAttention, RoPESelfCrossBlock
from varformer.restorevar import PATCH_NUMS_512


def test_rope_tables_at_512_have_the_official_shapes_and_positions():
    t, c = pyramid_rope_table(64, PATCH_NUMS_512), grid_rope_table(64, 32)
    assert t.shape == (2240, 32) and t.dtype == torch.complex64
    assert c.shape == (1024, 32) and c.dtype == torch.complex64
    assert torch.equal(t[-1024:], c)                                 # the finest scale is the condition grid
    assert torch.equal(t[0], torch.ones(32, dtype=torch.complex64))  # first token at (0, 0): no rotation
    rows, cols = pyramid_positions(PATCH_NUMS_512)
    # scale 2 (3x3), token (1, 2): top-left corner (1/3 * 32, 2/3 * 32), computed in float32 in that order
    assert rows[5 + 5].item() == (torch.tensor(1.0) / 3 * 32).item()
    assert cols[5 + 5].item() == (torch.tensor(2.0) / 3 * 32).item()
    naive = ref.positions(PATCH_NUMS_512)
    assert torch.allclose(rows.double(), naive[:, 0], atol=1e-5)
    assert torch.allclose(cols.double(), naive[:, 1], atol=1e-5)
    # angles: pair m < 16 turns by row * 10000^(-m/16), pair 16 + m by col * the same frequency
    m = 3
    f = 10000.0 ** (-4 * m / 64)
    assert abs(torch.angle(t[10, m]).item() - math.remainder(rows[10].item() * f, 2 * math.pi)) < 1e-5
    assert abs(torch.angle(t[10, 16 + m]).item() - math.remainder(cols[10].item() * f, 2 * math.pi)) < 1e-5
    with pytest.raises(ValueError, match="divisible by 4"):
        pyramid_rope_table(62, PATCH_NUMS_512)


def test_apply_rope_is_the_pairwise_rotation():
    pn = (1, 2, 3, 4)
    x = torch.randn(2, 3, 30, 16)
    ours = apply_rope(x, pyramid_rope_table(16, pn))
    assert torch.allclose(ours, ref.rope(x, ref.positions(pn)), atol=1e-5)
    assert torch.allclose(ours.norm(dim=-1), x.norm(dim=-1), atol=1e-5)        # a rotation
    assert apply_rope(x.bfloat16(), pyramid_rope_table(16, pn)).dtype == torch.bfloat16


def _sd(module, prefix):
    return {prefix + k: v for k, v in module.state_dict().items()}


def _randomised(module, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (0.3 if p.ndim else 1.0) + (1.0 if "norm" in name else 0.0))
    return module


def test_self_attention_cross_attention_and_block_match_the_naive_formulas():
    torch.manual_seed(0)
    pn, C, H = (1, 2, 3, 4), 64, 2
    L, N = 30, 16
    pos, pos_c = ref.positions(pn), ref.positions((4,))
    table, cross = pyramid_rope_table(C // H, pn), grid_rope_table(C // H, 4)
    lvl = torch.cat([torch.full((p * p,), i) for i, p in enumerate(pn)])
    mask = torch.where(lvl[:, None] >= lvl[None, :], 0.0, -torch.inf)
    x, cond = torch.randn(2, L, C), torch.randn(2, N, C)

    sa = _randomised(RoPESelfAttention(C, H))
    with torch.no_grad():
        sa.scale_mul_1H11[0, 0] = 6.0                         # above the clamp at ln 100
    assert torch.allclose(sa(x, mask.view(1, 1, L, L), table), ref.self_attention(_sd(sa, ""), "", x, pos, mask, H),
                          atol=1e-5)

    ca = _randomised(RoPECrossAttention(C, H), 1)
    k, v = ca.keys_values(cond, cross)
    assert torch.allclose(ca(x, k, v, table), ref.cross_attention(_sd(ca, ""), "", x, cond, pos, pos_c, H), atol=1e-5)

    blk = _randomised(RoPESelfCrossBlock(C, H), 2).eval()
    k, v = blk.cross_attn.keys_values(cond, cross)
    ours = blk(x, mask.view(1, 1, L, L), table, k, v)
    assert torch.allclose(ours, ref.block(_sd(blk, "blocks.0."), 0, x, cond, pos, pos_c, mask, H), atol=1e-4)

    # the KV cache, scale by scale without a mask, equals the masked full sequence (cached keys are rotated)
    blk.attn.kv_caching(True)
    outs, begin = [], 0
    for p in pn:
        outs.append(blk(x[:, begin:begin + p * p], None, table[begin:begin + p * p], k, v))
        begin += p * p
    blk.attn.kv_caching(False)
    assert torch.allclose(torch.cat(outs, 1), ours, atol=1e-5)


def test_block_keeps_the_official_keys_and_drop_path_only_in_training():
    blk = RoPESelfCrossBlock(128, 2, drop_path=0.5)
    assert sorted(blk.state_dict()) == sorted([
        "attn.scale_mul_1H11", "attn.q_bias", "attn.v_bias", "attn.zero_k_bias", "attn.mat_qkv.weight",
        "attn.proj.weight", "attn.proj.bias", "ffn.fc1.weight", "ffn.fc1.bias", "ffn.fc2.weight", "ffn.fc2.bias",
        "cross_attn.scale_mul_1H11", "cross_attn.gain", "cross_attn.q_proj.weight", "cross_attn.kv_proj.weight",
        "cross_attn.out_proj.weight", "cross_attn.out_proj.bias", "cross_attn.norm_q.weight",
        "cross_attn.norm_q.bias", "cross_attn.norm_kv.weight", "cross_attn.norm_kv.bias"])
    assert blk.cross_attn.gain.item() == 0.0 and blk.cross_attn.norm_q.eps == 1e-5 and blk.ln_wo_grad.eps == 1e-6
    x, cond = torch.randn(4, 5, 128), torch.randn(4, 16, 128)
    table = pyramid_rope_table(64, (1, 2))
    k, v = blk.cross_attn.keys_values(cond, grid_rope_table(64, 4))
    blk.eval()
    assert torch.equal(blk(x, None, table, k, v), blk(x, None, table, k, v))
