"""DiffBIR's SwinIR (general_swinir_v1.ckpt layout): the official key layout loads (buffers checked), the forward
equals SwinIR written out with roll / window partition / explicit attention, batch rows are independent."""
import math

import pytest
import torch
import torch.nn.functional as F

from varformer.backbone.swin import relative_position_index, shifted_window_mask
from varformer.backbone.swinir import SwinIR, official_shapes, swinir_from_official, swinir_layout, unwrap_swinir_file
from varformer.errors import CheckpointMismatchError

SMALL = dict(embed_dim=24, depths=[2, 2], num_heads=[2, 3], window=8, mlp_ratio=2.0, unshuffle_scale=8,
             num_feat=16)


def official_sd(layout=SMALL, seed=0):
    shapes, _ = official_shapes(layout)
    g = torch.Generator().manual_seed(seed)
    w = layout["window"]
    out = {}
    for k, s in shapes.items():
        if k.endswith("relative_position_index"):
            out[k] = relative_position_index(w)
        elif k.endswith("attn_mask"):
            out[k] = shifted_window_mask(64, 64, w, w // 2)
        else:
            out[k] = (1.0 if "norm" in k and k.endswith("weight") else 0.0) + 0.1 * torch.randn(s, generator=g)
    return out


def naive_swinir(sd, x, layout=SMALL):
    """The official forward, literally: roll, window partition, q k^T + bias (+ mask), softmax, merge, roll back."""
    w, C = layout["window"], layout["embed_dim"]
    mean = torch.tensor([0.4488, 0.4371, 0.4040]).view(1, 3, 1, 1)
    f = F.conv2d(F.pixel_unshuffle(x - mean, 8), sd["conv_first.1.weight"], sd["conv_first.1.bias"], padding=1)
    B, _, H, W = f.shape
    t = F.layer_norm(f.flatten(2).transpose(1, 2), (C,), sd["patch_embed.norm.weight"], sd["patch_embed.norm.bias"])
    idx = relative_position_index(w).reshape(-1)
    for i, depth in enumerate(layout["depths"]):
        heads = layout["num_heads"][i]
        t_in = t
        for j in range(depth):
            p = f"layers.{i}.residual_group.blocks.{j}."
            shift = w // 2 if j % 2 else 0
            h = F.layer_norm(t, (C,), sd[p + "norm1.weight"], sd[p + "norm1.bias"]).view(B, H, W, C)
            h = torch.roll(h, (-shift, -shift), (1, 2))
            win = h.view(B, H // w, w, W // w, w, C).permute(0, 1, 3, 2, 4, 5).reshape(-1, w * w, C)
            qkv = (win @ sd[p + "attn.qkv.weight"].T + sd[p + "attn.qkv.bias"]).reshape(-1, w * w, 3, heads,
                                                                                          C // heads)
            q, k, v = qkv.permute(2, 0, 3, 1, 4)
            a = (q * (C // heads) ** -0.5) @ k.transpose(-1, -2)
            a = a + sd[p + "attn.relative_position_bias_table"][idx].view(w * w, w * w, heads).permute(2, 0, 1)
            if shift:
                nW = (H // w) * (W // w)
                a = (a.view(B, nW, heads, w * w, w * w) + shifted_window_mask(H, W, w, shift)[None, :, None]
                     ).view(-1, heads, w * w, w * w)
            o = (a.softmax(-1) @ v).transpose(1, 2).reshape(-1, w * w, C) @ sd[p + "attn.proj.weight"].T
            o = o + sd[p + "attn.proj.bias"]
            o = o.view(B, H // w, W // w, w, w, C).permute(0, 1, 3, 2, 4, 5).reshape(B, H, W, C)
            t = t + torch.roll(o, (shift, shift), (1, 2)).reshape(B, H * W, C)
            m = F.layer_norm(t, (C,), sd[p + "norm2.weight"], sd[p + "norm2.bias"])
            m = F.gelu(m @ sd[p + "mlp.fc1.weight"].T + sd[p + "mlp.fc1.bias"])
            t = t + m @ sd[p + "mlp.fc2.weight"].T + sd[p + "mlp.fc2.bias"]
        conv = F.conv2d(t.transpose(1, 2).reshape(B, C, H, W), sd[f"layers.{i}.conv.weight"],
                        sd[f"layers.{i}.conv.bias"], padding=1)
        t = conv.flatten(2).transpose(1, 2) + t_in
    t = F.layer_norm(t, (C,), sd["norm.weight"], sd["norm.bias"])
    f = F.conv2d(t.transpose(1, 2).reshape(B, C, H, W), sd["conv_after_body.weight"], sd["conv_after_body.bias"],
                 padding=1) + f
    f = F.leaky_relu(F.conv2d(f, sd["conv_before_upsample.0.weight"], sd["conv_before_upsample.0.bias"], padding=1),
                     0.01)
    for n in (1, 2, 3):
        f = F.interpolate(f, scale_factor=2, mode="nearest")
        f = F.leaky_relu(F.conv2d(f, sd[f"conv_up{n}.weight"], sd[f"conv_up{n}.bias"], padding=1), 0.2)
    f = F.leaky_relu(F.conv2d(f, sd["conv_hr.weight"], sd["conv_hr.bias"], padding=1), 0.2)
    return F.conv2d(f, sd["conv_last.weight"], sd["conv_last.bias"], padding=1) + mean


def build(sd_official):
    sd = unwrap_swinir_file({"state_dict": {"module." + k: v for k, v in sd_official.items()}})
    lay = swinir_layout(sd)
    model = SwinIR(**lay)
    model.load_state_dict(swinir_from_official(sd, lay["window"]), strict=True)
    return model.eval(), lay


def test_official_layout_loads_and_the_forward_is_swinir_written_out():
    sd = official_sd()
    model, lay = build(sd)
    assert lay == dict(SMALL)
    x = torch.rand(2, 3, 128, 128)
    with torch.no_grad():
        out = model(x)
    assert out.shape == x.shape
    assert torch.allclose(out, naive_swinir(sd, x), atol=1e-4)
    with pytest.raises(ValueError, match="multiples of 64"):
        model(torch.rand(1, 3, 96, 96))


def test_batch_rows_are_independent():
    model, _ = build(official_sd())
    x = torch.rand(2, 3, 128, 128)
    with torch.no_grad():
        both = model(x)
        assert both.is_contiguous()
        assert torch.allclose(both[1:], model(x[1:]), atol=1e-5)


def test_buffers_are_checked_and_the_released_layout_counts():
    sd = official_sd()
    bad = dict(sd, **{"layers.0.residual_group.blocks.1.attn_mask": torch.zeros(64, 64, 64)})
    with pytest.raises(CheckpointMismatchError, match="differs from the recomputed"):
        swinir_from_official(bad, 8)
    with pytest.raises(CheckpointMismatchError, match="not a DiffBIR SwinIR"):
        swinir_layout({"conv_first.weight": torch.zeros(1)})
    released = dict(embed_dim=180, depths=[6] * 8, num_heads=[6] * 8, window=8, mlp_ratio=2.0, unshuffle_scale=8,
                    num_feat=64)
    shapes, n = official_shapes(released)
    # 15.8 M parameters + 48 relative-position indices + 24 shifted-window masks = the 90.2 MB file
    assert len(shapes) == 732 and n == 15_792_587
    assert shapes["conv_first.1.weight"] == (180, 192, 3, 3) and shapes["conv_up3.weight"] == (64, 64, 3, 3)
    assert math.isclose((4 * n + 24 * 64 ** 3 * 4 + 48 * 64 * 64 * 8) / 2 ** 20, 86.0, abs_tol=1.0)
