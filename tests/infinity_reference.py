"""A naive re-statement of Infinity's computations as VARestorer runs them, written from the description of the
official code (infinity/models/infinity.py, basic.py, bsq_vae/multiscale_bsq.py, bitwise_self_correction.py), to
check ours against.

It reads an *official-layout* state dict and uses plain float64 tensor algebra: positions from exact fractions,
RoPE as complex rotations of channel pairs, attention as an explicit softmax of q k^T (per image over its own text
rows: no padding, no mask tensors), the quantiser loop on 2-D maps (area = adaptive average pooling, trilinear with a
depth of 1 = bilinear). Also: the official key/shape layouts of Infinity (plain or LoRA-injected) and of the
BSQ-VAE, from the rules of their constructors. Shared by tests/backbone and tests/varestorer.
"""
from __future__ import annotations

import math
import re
from fractions import Fraction

import torch
import torch.nn.functional as F

SCHEDULE_1M = (1, 2, 4, 6, 8, 12, 16, 20, 24, 32, 40, 48, 64)


# ---------------------------------------------------------------------------------------------------------------
# RoPE
# ---------------------------------------------------------------------------------------------------------------
def rope_positions(schedule=SCHEDULE_1M):
    """(row, col) on the 128 grid of every token: round(i * 64 / pn), exact fractions, half to even."""
    last = schedule[-1]
    return [(round(Fraction(i * last, pn)), round(Fraction(j * last, pn)))
            for pn in schedule for i in range(pn) for j in range(pn)]


def rope_angles(head_dim, positions):
    """(L, head_dim / 2) float64: pair t < d/4 turns by row * 10000^(-2t/(d/2)), pair d/4 + t by col * the same."""
    quarter = head_dim // 4
    f = [10000.0 ** (-2 * t / (head_dim / 2)) for t in range(quarter)]
    return torch.tensor([[r * f[t] for t in range(quarter)] + [c * f[t] for t in range(quarter)]
                         for r, c in positions], dtype=torch.float64)


def rotate(x_BHLd, angles_Lh):
    pairs = torch.complex(x_BHLd[..., 0::2].double(), x_BHLd[..., 1::2].double())
    turned = pairs * torch.polar(torch.ones_like(angles_Lh), angles_Lh)
    return torch.stack((turned.real, turned.imag), dim=-1).flatten(-2)


# ---------------------------------------------------------------------------------------------------------------
# attention and blocks
# ---------------------------------------------------------------------------------------------------------------
def lin(x, sd, p, bias=True):
    return x @ sd[p + "weight"].double().T + (sd[p + "bias"].double() if bias else 0)


def heads(x, H):
    B, L, C = x.shape
    return x.reshape(B, L, H, C // H).transpose(1, 2)


def merge(x):
    B, H, L, d = x.shape
    return x.transpose(1, 2).reshape(B, L, H * d)


def softmax_attention(q, k, v, scale, allowed=None):
    s = (q @ k.transpose(-1, -2)) * scale
    if allowed is not None:
        s = s.masked_fill(~allowed, float("-inf"))
    return torch.softmax(s, dim=-1) @ v


def self_attention(x, sd, p, H, angles=None, allowed=None):
    C = x.shape[-1]
    qkv = x @ sd[p + "mat_qkv.weight"].double().T
    qkv = qkv + torch.cat([sd[p + "q_bias"], torch.zeros(C), sd[p + "v_bias"]]).double()
    q, k, v = (heads(t, H) for t in qkv.split(C, dim=-1))
    s = sd[p + "scale_mul_1H11"].double().clamp(max=math.log(100)).exp()
    q = q / q.norm(dim=-1, keepdim=True) * s
    k = k / k.norm(dim=-1, keepdim=True)
    if angles is not None:
        q, k = rotate(q, angles[:x.shape[1]]), rotate(k, angles[:x.shape[1]])
    return lin(merge(softmax_attention(q, k, v, 1.0, allowed)), sd, p + "proj.")


def text_kv(rows, sd, p, H, value_bias):
    C = sd[p + "v_bias"].shape[0]
    kv = rows @ sd[p + "mat_kv.weight"].double().T
    if value_bias:
        kv = kv + torch.cat([torch.zeros(C), sd[p + "v_bias"]]).double()
    k, v = kv.split(C, dim=-1)
    return heads(k[None], H), heads(v[None], H)


def cross_attention(x, texts, sd, p, H, value_bias=True):
    """Image b's tokens attend to its own text rows ``texts[b]`` (L_b, C) only."""
    out = []
    for b, rows in enumerate(texts):
        q = heads(lin(x[b:b + 1], sd, p + "mat_q."), H)
        k, v = text_kv(rows, sd, p, H, value_bias)
        out.append(merge(softmax_attention(q, k, v, 1 / math.sqrt(q.shape[-1]))))
    return lin(torch.cat(out), sd, p + "proj.")


def attentive_pool(texts, sd, p):
    """(B, D): the learned per-head query over each image's rows, keys/values with (0, v_bias)."""
    q = sd[p + "mat_q"].double()                      # (1, H, d)
    H = q.shape[1]
    out = []
    for rows in texts:
        k, v = text_kv(rows, sd, p, H, True)
        out.append(merge(softmax_attention(q[:, :, None], k, v, 1 / math.sqrt(q.shape[-1]))))
    return lin(torch.cat(out), sd, p + "proj.")[:, 0]


def ln(x, eps=1e-6):
    mu = x.mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(((x - mu) ** 2).mean(-1, keepdim=True) + eps)


def gelu_tanh(x):
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


def block(x, gss, texts, sd, p, H, angles, allowed, value_bias=True):
    g1, g2, s1, s2, t1, t2 = (sd[p + "ada_gss"].double() + gss).unbind(2)
    x = x + self_attention(ln(x) * (1 + s1) + t1, sd, p + "sa.", H, angles, allowed) * g1
    h = ln(x) * sd[p + "ca_norm.weight"].double() + sd[p + "ca_norm.bias"].double()
    x = x + cross_attention(h, texts, sd, p + "ca.", H, value_bias)
    h = ln(x) * (1 + s2) + t2
    return x + lin(gelu_tanh(lin(h, sd, p + "ffn.fc1.")), sd, p + "ffn.fc2.") * g2


def block_prefixes(sd):
    chunked = sorted({(int(a), int(b)) for k in sd for a, b in re.findall(r"^block_chunks\.(\d+)\.module\.(\d+)\.", k)})
    if chunked:
        return [f"block_chunks.{a}.module.{b}." for a, b in chunked]
    return [f"blocks.{i}." for i in sorted({int(a) for k in sd for a in re.findall(r"^blocks\.(\d+)\.", k)})]


def forward(sd, texts, x_in, patch_nums, H, value_bias_in_blocks=True):
    """Official Infinity/BInfinity forward: block-causal for L tokens, full attention for the long input."""
    texts = [t.double() for t in texts]
    w = sd["text_norm.weight"].double()
    normed = [t / torch.sqrt((t ** 2).mean(-1, keepdim=True) + 1e-6) * w for t in texts]
    cond = attentive_pool(normed, sd, "text_proj_for_sos.ca.")
    kv_src = [lin(gelu_tanh(lin(t, sd, "text_proj_for_ca.0.")), sd, "text_proj_for_ca.2.") for t in normed]
    C = cond.shape[-1]
    gss = lin(F.silu(cond), sd, "shared_ada_lin.1.").reshape(-1, 1, 6, C)
    x = torch.cat([(cond[:, None] + sd["pos_start"].double()), lin(x_in.double(), sd, "word_embed.")], dim=1)
    sizes = [p * p for p in patch_nums]
    L = sum(sizes)
    long_input = x.shape[1] > L
    if long_input:
        sizes.append(patch_nums[-1] ** 2)
    level = torch.cat([torch.full((n,), i) for i, n in enumerate(sizes)])
    x = x + sd["lvl_embed.weight"].double()[level]
    allowed = None if long_input else level[:, None] >= level[None, :]
    angles = rope_angles(C // H, rope_positions()[:x.shape[1]])
    for p in block_prefixes(sd):
        x = block(x, gss, kv_src, sd, p, H, angles, allowed, value_bias_in_blocks)
    scale, shift = lin(F.silu(cond), sd, "head_nm.ada_lin.1.").reshape(-1, 1, 2, C).unbind(2)
    return lin(ln(x[:, :L]) * (1 + scale) + shift, sd, "head.")


# ---------------------------------------------------------------------------------------------------------------
# the quantiser
# ---------------------------------------------------------------------------------------------------------------
def bsq(r_Bdhw):
    """Per position: v / |v|, +-1/sqrt(d) by sign (+ for > 0), bits."""
    d = r_Bdhw.shape[1]
    u = r_Bdhw / r_Bdhw.norm(dim=1, keepdim=True)
    q = torch.where(u > 0, 1.0, -1.0).to(r_Bdhw.dtype) / math.sqrt(d)
    return q, (q > 0).permute(0, 2, 3, 1)


def pyramid(h_BdGG, patch_nums, long_input):
    """The residual loop on 2-D maps (area down = adaptive average pool, up = bilinear, align_corners=False)."""
    h = h_BdGG.double()
    G = h.shape[-1]
    cum = torch.zeros_like(h)
    inputs, bits = [], []
    for k, pn in enumerate(patch_nums):
        r = h - cum
        if k < len(patch_nums) - 1:
            r = F.adaptive_avg_pool2d(r, pn)
        q, b = bsq(r)
        bits.append(b)
        cum = cum + F.interpolate(q, size=(G, G), mode="bilinear", align_corners=False)
        if k < len(patch_nums) - 1:
            nxt = F.interpolate(cum, size=(patch_nums[k + 1],) * 2, mode="bilinear", align_corners=False)
            inputs.append(nxt.flatten(2).transpose(1, 2))
        elif long_input:
            inputs.append(cum.flatten(2).transpose(1, 2))
    return torch.cat(inputs, dim=1), bits


# ---------------------------------------------------------------------------------------------------------------
# official key layout
# ---------------------------------------------------------------------------------------------------------------
def official_infinity_shapes(depth, C, H, Ct5, chunks, lora_rank=0, text_maxlen=512, codebook_dim=32, mlp=4.0):
    """key -> shape of the official (LoRA-injected when lora_rank > 0) Infinity state dict, buffers included."""
    hidden = round(C * mlp / 256) * 256
    s = {"cfg_uncond": (text_maxlen, Ct5), "text_norm.weight": (Ct5,),
         "text_proj_for_sos.ca.mat_q": (1, Ct5 // 128, C // (Ct5 // 128)),
         "text_proj_for_sos.ca.mat_kv.weight": (2 * C, Ct5), "text_proj_for_sos.ca.v_bias": (C,),
         "text_proj_for_sos.ca.zero_k_bias": (C,), "text_proj_for_sos.ca.proj.weight": (C, C),
         "text_proj_for_sos.ca.proj.bias": (C,), "text_proj_for_ca.0.weight": (C, Ct5),
         "text_proj_for_ca.0.bias": (C,), "text_proj_for_ca.2.weight": (C, C), "text_proj_for_ca.2.bias": (C,),
         "pos_start": (1, 1, C), "lvl_embed.weight": (15, C), "word_embed.weight": (C, codebook_dim),
         "word_embed.bias": (C,), "shared_ada_lin.1.weight": (6 * C, C), "shared_ada_lin.1.bias": (6 * C,),
         "head_nm.ada_lin.1.weight": (2 * C, C), "head_nm.ada_lin.1.bias": (2 * C,),
         "head.weight": (2 * codebook_dim, C), "head.bias": (2 * codebook_dim,)}
    per = depth // chunks
    for b in range(depth):
        P = f"block_chunks.{b // per}.module.{b % per}." if chunks > 1 else f"blocks.{b}."
        s.update({P + "ada_gss": (1, 1, 6, C), P + "sa.scale_mul_1H11": (1, H, 1, 1), P + "sa.q_bias": (C,),
                  P + "sa.v_bias": (C,), P + "sa.zero_k_bias": (C,), P + "ca.v_bias": (C,),
                  P + "ca.zero_k_bias": (C,), P + "ca_norm.weight": (C,), P + "ca_norm.bias": (C,),
                  P + "ffn.fc1.weight": (hidden, C), P + "ffn.fc1.bias": (hidden,),
                  P + "ffn.fc2.weight": (C, hidden), P + "ffn.fc2.bias": (C,)})
        for name, out, bias in (("sa.mat_qkv", 3 * C, False), ("sa.proj", C, True), ("ca.mat_q", C, True),
                                ("ca.mat_kv", 2 * C, False), ("ca.proj", C, True)):
            inner = ".linear" if lora_rank else ""
            s[P + name + inner + ".weight"] = (out, C)
            if bias:
                s[P + name + inner + ".bias"] = (out,)
            if lora_rank:
                s[P + name + ".lora_down.weight"] = (lora_rank, C)
                s[P + name + ".lora_up.weight"] = (out, lora_rank)
    return s


def random_state_dict(shapes, seed=0, scale=0.2):
    """Random tensors for a key -> shape layout (zero k-bias buffers, norm weights near 1)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, shape in shapes.items():
        if k.endswith("zero_k_bias"):
            out[k] = torch.zeros(shape)
        elif k.endswith(("norm.weight", "ca_norm.weight")):
            out[k] = 1 + scale * torch.randn(shape, generator=g)
        else:
            out[k] = scale * torch.randn(shape, generator=g)
    return out


def official_vae_shapes(base, mult, nres, z=32):
    """The official AutoEncoder's keys (Conv -> *.conv.*, Normalize -> *.norm.*), from the flux layout rules."""
    s = {}

    def conv(p, cin, cout, k):
        s[p + ".conv.weight"], s[p + ".conv.bias"] = (cout, cin, k, k), (cout,)

    def norm(p, c):
        s[p + ".norm.weight"], s[p + ".norm.bias"] = (c,), (c,)

    def res(p, cin, cout):
        norm(p + ".norm1", cin), conv(p + ".conv1", cin, cout, 3), norm(p + ".norm2", cout)
        conv(p + ".conv2", cout, cout, 3)
        if cin != cout:
            conv(p + ".nin_shortcut", cin, cout, 1)

    conv("encoder.conv_in", 3, base, 3)
    cin = base
    for i, m in enumerate(mult):
        for j in range(nres):
            res(f"encoder.down.{i}.block.{j}", cin, base * m)
            cin = base * m
        if i < len(mult) - 1:
            conv(f"encoder.down.{i}.downsample.conv", cin, cin, 3)
    res("encoder.mid.block_1", cin, cin), res("encoder.mid.block_2", cin, cin)
    norm("encoder.norm_out", cin), conv("encoder.conv_out", cin, z, 3)
    cin = base * mult[-1]
    conv("decoder.conv_in", z, cin, 3)
    res("decoder.mid.block_1", cin, cin), res("decoder.mid.block_2", cin, cin)
    for i in reversed(range(len(mult))):
        for j in range(nres + 1):
            res(f"decoder.up.{i}.block.{j}", cin, base * mult[i])
            cin = base * mult[i]
        if i > 0:
            conv(f"decoder.up.{i}.upsample.conv", cin, cin, 3)
    norm("decoder.norm_out", cin), conv("decoder.conv_out", cin, 3, 3)
    return s
