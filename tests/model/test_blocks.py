"""Building blocks against direct (naive) formulas of what the official code computes (docs/architecture.md)."""
import math

import pytest
import torch
import torch.nn.functional as F

from varformer.model.adapter import Adapter, CurveAdjustConv
from varformer.model.aft import AnchorAttention
from varformer.model.alignment import AlignStep, ModulatedDeformConv
from varformer.model.cross_attention import CrossAttentionInjection, merge_heads
from varformer.model.dae import RegionFusion, ScaleSelection
from varformer.backbone.swin import RSTB, SwinBlock, relative_position_index, shifted_window_mask


def _randomize(module, std=0.2, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return module


# ------------------------------------------------------------------ cross-attention (5.2)
def _official_recut(o_RHlc):
    """The literal official layout: (head, row, token, dim) order, flat, cut into R rows."""
    R, H, l, hd = o_RHlc.shape
    return o_RHlc.permute(1, 0, 2, 3).reshape(R, l, H * hd)


def test_recut_single_image_is_the_literal_official_layout():
    o = torch.randn(2, 16, 5, 4)
    assert torch.equal(merge_heads(o, "official", 1), _official_recut(o))
    assert not torch.equal(merge_heads(o, "official", 1), merge_heads(o, "standard"))


def test_recut_is_applied_per_image_pair():
    B = 3
    o = torch.randn(2 * B, 16, 4, 2)
    merged = merge_heads(o, "official", B)
    for b in range(B):
        pair = torch.stack([o[b], o[B + b]])
        alone = _official_recut(pair)
        assert torch.equal(merged[b], alone[0]) and torch.equal(merged[B + b], alone[1])


def test_cross_attention_matches_spec_formula():
    torch.manual_seed(0)
    C, l, B = 64, 6, 2
    blk = _randomize(CrossAttentionInjection(C, 16, "official"))
    f_d, f_var = torch.randn(2 * B, l, C), torch.randn(2 * B, l, C)
    hd = C // 16
    q = (f_d @ blk.mat_q.weight.T + blk.q_bias).view(2 * B, l, 16, hd).transpose(1, 2)
    kv = f_var @ blk.mat_kv.weight.T + torch.cat([torch.zeros(C), blk.v_bias])
    k, v = kv[..., :C].view(2 * B, l, 16, hd).transpose(1, 2), kv[..., C:].view(2 * B, l, 16, hd).transpose(1, 2)
    o = torch.softmax(0.25 / math.sqrt(hd) * q @ k.transpose(-1, -2), dim=-1) @ v
    want = blk.proj(merge_heads(o, "official", B))
    torch.testing.assert_close(blk(f_d, f_var, n_images=B), want, atol=1e-5, rtol=1e-5)
    # queries precomputed on B rows (identical for the two halves) give the same result
    q_b = blk.query(f_d[:B])
    torch.testing.assert_close(blk(None, f_var, q_RHlc=q_b, n_images=B), blk(torch.cat([f_d[:B]] * 2), f_var,
                                                                            n_images=B), atol=1e-6, rtol=1e-6)


def test_standard_layout_keeps_identical_halves_identical():
    blk = _randomize(CrossAttentionInjection(32, 16, "standard"))
    x, d = torch.randn(1, 3, 32), torch.randn(1, 3, 32)
    out = blk(torch.cat([d, d]), torch.cat([x, x]))
    torch.testing.assert_close(out[0], out[1], atol=1e-6, rtol=1e-6)
    with pytest.raises(ValueError, match="head_layout"):
        CrossAttentionInjection(32, 16, "bogus")


# ------------------------------------------------------------------ Swin (5.3)
def test_relative_position_index_and_mask():
    idx = relative_position_index(4)
    assert idx.shape == (16, 16) and idx[0, 0] == 24 and idx[0, 15] == 0 and idx[15, 0] == 48
    mask = shifted_window_mask(16, 16, 4, 2)
    assert mask.shape == (16, 16, 16)
    assert set(mask.unique().tolist()) == {0.0, -100.0}
    assert (mask[0] == 0).all()            # a window away from the rolled border is one region
    assert (mask[-1] == -100).any()        # the corner window mixes four regions


def _naive_window_block(blk: SwinBlock, x_BHWC):
    B, H, W, C = x_BHWC.shape
    ws, sh, heads = blk.window, blk.shift, blk.attn.heads
    h = blk.norm1(x_BHWC)
    if sh:
        h = torch.roll(h, (-sh, -sh), (1, 2))
    out = torch.zeros_like(h)
    bias = blk.attn.position_bias()
    mask = shifted_window_mask(H, W, ws, sh) if sh else torch.zeros((H // ws) * (W // ws), ws * ws, ws * ws)
    w = 0
    for i in range(0, H, ws):
        for j in range(0, W, ws):
            t = h[:, i:i + ws, j:j + ws].reshape(B, ws * ws, C)
            q, k, v = blk.attn.qkv(t).view(B, -1, 3, heads, C // heads).permute(2, 0, 3, 1, 4)
            a = (q * blk.attn.scale) @ k.transpose(-1, -2) + bias + mask[w]
            o = (a.softmax(-1) @ v).transpose(1, 2).reshape(B, ws * ws, C)
            out[:, i:i + ws, j:j + ws] = blk.attn.proj(o).view(B, ws, ws, C)
            w += 1
    if sh:
        out = torch.roll(out, (sh, sh), (1, 2))
    x = x_BHWC + out
    return x + blk.mlp(blk.norm2(x))


@pytest.mark.parametrize("shift", [0, 2])
def test_swin_block_matches_naive_windows(shift):
    blk = _randomize(SwinBlock(32, 8, 4, shift), std=0.1)
    x = torch.randn(2, 8, 12, 32)
    out = blk(x.reshape(2, 8 * 12, 32), 8, 12).view(2, 8, 12, 32)
    torch.testing.assert_close(out, _naive_window_block(blk, x), atol=1e-5, rtol=1e-5)


def test_rstb_residual_shape():
    r = _randomize(RSTB(32, 4), std=0.05)
    x = torch.randn(1, 32, 16, 8)
    assert r(x).shape == x.shape


# ------------------------------------------------------------------ DAE (5.4, 5.5)
def test_scale_selection_formula():
    torch.manual_seed(1)
    sel = _randomize(ScaleSelection(32, 64, 2, heads=8), std=0.05)
    g, priors = torch.randn(2, 32, 32, 32), torch.randn(2, 10, 32, 16, 16)
    prior, w = sel(g, priors)
    s = sel.rstbs[1](sel.rstbs[0](g))
    w_ref = sel.to_weights(s).mean(dim=(2, 3)).softmax(1)       # official order: conv then mean
    q = F.instance_norm((w_ref[:, :, None, None, None] * priors).reshape(2, 320, 16, 16), eps=1e-5)
    ref = sel.upsample_conv(F.interpolate(sel.proj(q), scale_factor=2, mode="nearest"))
    torch.testing.assert_close(w, w_ref, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(prior, ref, atol=1e-5, rtol=1e-4)
    assert prior.shape == (2, 64, 32, 32)


def test_softmax_weight_heads_stay_float32_under_bf16_autocast():
    sel = _randomize(ScaleSelection(32, 32, 1, heads=8), std=0.05)
    fuse = _randomize(RegionFusion(32, 4), std=0.05)
    g, priors = torch.randn(1, 32, 16, 16), torch.randn(1, 10, 32, 16, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        prior, w = sel(g, priors)
        out = fuse(g, prior)
    assert w.dtype == torch.float32 and prior.dtype == torch.bfloat16
    torch.testing.assert_close(w, sel(g, priors)[1], atol=2e-2, rtol=0)
    assert torch.isfinite(out).all()


def test_region_fusion_is_a_convex_blend():
    fuse = _randomize(RegionFusion(32, 4), std=0.05)
    h, p = torch.randn(1, 32, 16, 16), torch.randn(1, 32, 16, 16)
    out = fuse(h, p)
    lo, hi = torch.minimum(h, p), torch.maximum(h, p)
    assert ((out >= lo - 1e-5) & (out <= hi + 1e-5)).all()


# ------------------------------------------------------------------ AFT (5.6)
def test_anchor_attention_matches_two_step_formula():
    aft = _randomize(AnchorAttention(32), std=0.1)
    x, p = torch.randn(2, 32, 16, 12), torch.randn(2, 32, 16, 12)
    B, C, H, W = x.shape
    q = aft.q(aft.norm_q(x)).flatten(2)                      # (B, C, N)
    k, v = aft.kv(aft.norm_kv(p)).flatten(2).chunk(2, dim=1)
    a = aft.a(aft.norm_a(torch.cat([x, p], 1))).flatten(2)  # (B, C, M)
    A1 = torch.softmax(q.transpose(1, 2) @ a / math.sqrt(C), dim=-1)   # (B, N, M) over anchors
    A2 = torch.softmax(a.transpose(1, 2) @ k / math.sqrt(C), dim=-1)   # (B, M, N) over pixels
    out = (A1 @ (A2 @ v.transpose(1, 2))).transpose(1, 2).reshape(B, C, H, W)
    torch.testing.assert_close(aft(x, p), x + aft.proj_out(out), atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------ Adapter (5.1)
def test_adapter_starts_as_identity_and_curve_clamps():
    ad = Adapter()
    f = torch.randn(2, 32, 16, 16)
    assert torch.equal(ad(f), f)  # zero-initialised beta/gamma
    curve = CurveAdjustConv(32)
    with torch.no_grad():
        for c in curve.convs:
            torch.nn.init.dirac_(c.weight)
            c.bias.zero_()
        for pa in curve.curve_params:
            pa[-2].weight.zero_()
            pa[-2].bias.fill_(-1e4)  # a = sigmoid(-1e4) = 0: the curve is the identity on [0, 1]
    x = torch.randn(1, 32, 8, 8) * 3
    torch.testing.assert_close(curve(x), x.clamp(0, 1))


# ------------------------------------------------------------------ decoder alignment (5.7)
def test_deform_conv_with_zero_offsets_is_half_a_conv():
    dcn = ModulatedDeformConv(32)
    x, feat = torch.randn(1, 32, 8, 8), torch.randn(1, 32, 8, 8)
    with torch.no_grad():
        dcn.bias.normal_()
    ref = 0.5 * F.conv2d(x, dcn.weight, padding=1) + dcn.bias[:, None, None]  # zero offsets, mask sigmoid(0)
    torch.testing.assert_close(dcn(x, feat), ref, atol=1e-5, rtol=1e-5)


def test_align_steps_chain_offsets():
    first = _randomize(AlignStep(64, 2, 0, merge=False), std=0.05)
    nxt = _randomize(AlignStep(32, 1, 64, merge=True), std=0.05)
    h, off = first(torch.randn(1, 64, 8, 8), torch.randn(1, 64, 8, 8), None)
    assert h.shape == (1, 64, 8, 8) and off.shape == (1, 64, 8, 8)
    h2, off2 = nxt(torch.randn(1, 32, 16, 16), torch.randn(1, 32, 16, 16), off)
    assert h2.shape == (1, 32, 16, 16) and off2.shape == (1, 32, 16, 16)
