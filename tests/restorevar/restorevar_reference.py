"""A naive re-statement of the official RestoreVAR computations, written from the description of the official code
(models/var.py, models/basic_var.py, models/vae_refiner_rope.py), to check ours against.

It reads the *official* state dict (``restorevar.pth`` keys, buffers included) and uses only plain tensor
algebra: RoPE as explicit cos/sin rotations of channel pairs (angles in float64), attention as an explicit softmax
of q k^T, no KV cache (every scale re-runs the whole prefix through all blocks with the block-causal mask), no
shortcuts for the condition keys/values. The VQVAE (encoder, code book, phi convolutions, decoder) is ours: it has
its own parity tests against the official VAR code.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def layer_norm(x, sd=None, prefix="", eps=1e-5):
    w = sd[prefix + "weight"] if sd is not None else None
    b = sd[prefix + "bias"] if sd is not None else None
    return F.layer_norm(x, x.shape[-1:], w, b, eps)


def linear(x, sd, prefix, bias=True):
    return F.linear(x, sd[prefix + "weight"], sd.get(prefix + "bias") if bias else None)


def positions(patch_nums):
    """(row, col) of every pyramid token on the finest grid: the token's top-left corner."""
    G = patch_nums[-1]
    out = []
    for pn in patch_nums:
        for i in range(pn):
            for j in range(pn):
                out.append((i / pn * G, j / pn * G))
    return torch.tensor(out, dtype=torch.float64)


def rope(x_BHLd, pos_L2):
    """Pairs (2m, 2m+1) turned by row * f_m (m < d/4) or col * f_(m - d/4), f_m = 10000^(-4m/d)."""
    d = x_BHLd.shape[-1]
    f = torch.tensor([10000.0 ** (-4 * m / d) for m in range(d // 4)], dtype=torch.float64)
    ang = torch.cat([pos_L2[:, :1] * f, pos_L2[:, 1:] * f], dim=1)          # (L, d/2)
    cos, sin = ang.cos(), ang.sin()
    x = x_BHLd.double()
    a, b = x[..., 0::2], x[..., 1::2]
    out = torch.empty_like(x)
    out[..., 0::2] = a * cos - b * sin
    out[..., 1::2] = a * sin + b * cos
    return out.to(x_BHLd.dtype)


def heads(t, H):
    B, L, C = t.shape
    return t.view(B, L, H, C // H).transpose(1, 2)


def merge(t):
    B, H, L, d = t.shape
    return t.transpose(1, 2).reshape(B, L, H * d)


def softmax_attention(q, k, v, scale=1.0, mask=None):
    s = q @ k.transpose(-1, -2) * scale
    if mask is not None:
        s = s + mask
    return s.softmax(-1) @ v


def self_attention(sd, p, x, pos, mask, H):
    C = x.shape[-1]
    bias = torch.cat([sd[p + "q_bias"], torch.zeros(C), sd[p + "v_bias"]])
    q, k, v = F.linear(x, sd[p + "mat_qkv.weight"], bias).chunk(3, dim=-1)
    q, k, v = heads(q, H), heads(k, H), heads(v, H)
    scale = sd[p + "scale_mul_1H11"].clamp_max(math.log(100)).exp()
    q = rope(F.normalize(q, dim=-1) * scale, pos)
    k = rope(F.normalize(k, dim=-1), pos)
    return linear(merge(softmax_attention(q, k, v, 1.0, mask)), sd, p + "proj.")


def cross_attention(sd, p, x, cond, pos_q, pos_k, H):
    q = linear(layer_norm(x, sd, p + "norm_q."), sd, p + "q_proj.", bias=False)
    k, v = linear(layer_norm(cond, sd, p + "norm_kv."), sd, p + "kv_proj.", bias=False).chunk(2, dim=-1)
    q, k, v = heads(q, H), heads(k, H), heads(v, H)
    scale = sd[p + "scale_mul_1H11"].clamp_max(math.log(100)).exp()
    q = rope(F.normalize(q, dim=-1) * scale, pos_q)
    k = rope(F.normalize(k, dim=-1), pos_k)
    return sd[p + "gain"] * linear(merge(softmax_attention(q, k, v, 1.0)), sd, p + "out_proj.")


def block(sd, i, x, cond, pos, pos_cond, mask, H):
    p = f"blocks.{i}."
    x = x + self_attention(sd, p + "attn.", layer_norm(x, eps=1e-6), pos, mask, H)
    h = layer_norm(x, eps=1e-6)
    x = x + linear(F.gelu(linear(h, sd, p + "ffn.fc1."), approximate="tanh"), sd, p + "ffn.fc2.")
    return x + cross_attention(sd, p + "cross_attn.", x, cond, pos, pos_cond, H)


def depth_of(sd):
    return 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))


def conditioning(sd, z_deg):
    """(first token (B, 1, C), condition tokens (B, N, C)) from the encoder output before quant_conv."""
    c = linear(z_deg.flatten(2).transpose(1, 2), sd, "cond_proj4.")
    g = sd["global_embed_gain"] * linear(c.mean(1, keepdim=True), sd, "global_embed.")
    sos = sd["class_emb.weight"][1000].view(1, 1, -1) + g
    return sos, linear(c, sd, "word_embed_cond.") + sd["lvl_embed_cond.weight"][0]


def run_blocks(sd, x, cond, patch_nums, H):
    L = x.shape[1]
    pos = positions(patch_nums)[:L]
    lvl = torch.cat([torch.full((pn * pn,), si) for si, pn in enumerate(patch_nums)])[:L]
    mask = torch.where(lvl[:, None] >= lvl[None, :], 0.0, -torch.inf)
    pos_cond = positions([patch_nums[-1]])
    for i in range(depth_of(sd)):
        x = block(sd, i, x, cond, pos, pos_cond, mask, H)
    return x


def logits(sd, x):
    return linear(layer_norm(x, eps=1e-6), sd, "head.")


def teacher_forced(sd, x_BLCv, z_deg, patch_nums, H):
    sos, cond = conditioning(sd, z_deg)
    B = x_BLCv.shape[0]
    x = torch.cat([sos.expand(B, -1, -1), linear(x_BLCv, sd, "word_embed.")], dim=1)
    lvl = torch.cat([torch.full((pn * pn,), si) for si, pn in enumerate(patch_nums)])
    x = x + sd["lvl_embed.weight"][lvl]
    return logits(sd, run_blocks(sd, x, cond, patch_nums, H))


def greedy_rollout(sd, vae, z_deg, patch_nums, H):
    """No KV cache: the sequence so far (first token + each finished scale's next input) through all blocks."""
    sos, cond = conditioning(sd, z_deg)
    B = z_deg.shape[0]
    lvl_emb = sd["lvl_embed.weight"]
    seq = sos.expand(B, -1, -1) + lvl_emb[0]
    f_hat = torch.zeros(B, 32, patch_nums[-1], patch_nums[-1])
    tokens, hidden, begin = [], [], 0
    for si, pn in enumerate(patch_nums):
        out = run_blocks(sd, seq, cond, patch_nums, H)[:, begin:]
        hidden.append(out)
        idx = logits(sd, out).argmax(-1)
        tokens.append(idx)
        h = vae.quantize.embedding.weight[idx].transpose(1, 2).reshape(B, 32, pn, pn)
        if si < len(patch_nums) - 1:
            h = F.interpolate(h, size=(patch_nums[-1],) * 2, mode="bicubic")
        f_hat = f_hat + vae.quantize.quant_resi.for_scale(si)(h)
        begin += pn * pn
        if si < len(patch_nums) - 1:
            nxt = F.interpolate(f_hat, size=(patch_nums[si + 1],) * 2, mode="area").flatten(2).transpose(1, 2)
            seq = torch.cat([seq, linear(nxt, sd, "word_embed.") + lvl_emb[si + 1]], dim=1)
    return tokens, f_hat, torch.cat(hidden, dim=1)


def refiner(sd, f_BNc, hidden, heads_n):
    p = "vae_refiner."
    h = linear(layer_norm(f_BNc, sd, p + "norm_in."), sd, p + "proj_in.", bias=False) + sd[p + "pos_embedding"]
    m = linear(layer_norm(hidden, sd, p + "norm_in_cond."), sd, p + "proj_in_cond.", bias=False) \
        + sd[p + "pos_embedding_cond"]
    d = h.shape[-1] // heads_n
    j = 0
    while f"{p}transformer.layers.{j}.0.to_qkv.weight" in sd:
        q_ = f"{p}transformer.layers.{j}."
        q, k, v = linear(layer_norm(h, sd, q_ + "0.norm."), sd, q_ + "0.to_qkv.", bias=False).chunk(3, dim=-1)
        att = softmax_attention(heads(q, heads_n), heads(k, heads_n), heads(v, heads_n), d ** -0.5)
        h = linear(merge(att), sd, q_ + "0.to_out.0.") + h
        ff = F.gelu(linear(layer_norm(h, sd, q_ + "1.net.0."), sd, q_ + "1.net.1."))
        h = linear(ff, sd, q_ + "1.net.4.") + h
        q = linear(layer_norm(h, sd, q_ + "2.norm_q."), sd, q_ + "2.to_q.", bias=False)
        k, v = linear(layer_norm(m, sd, q_ + "2.norm_kv."), sd, q_ + "2.to_kv.", bias=False).chunk(2, dim=-1)
        att = softmax_attention(heads(q, heads_n), heads(k, heads_n), heads(v, heads_n), d ** -0.5)
        h = linear(merge(att), sd, q_ + "2.to_out.") + h
        j += 1
    h = layer_norm(h, sd, p + "transformer.norm.")
    return linear(h, sd, p + "proj_out.", bias=False) + f_BNc


def restore(sd, vae, lq01, patch_nums, H, refiner_heads):
    """The official inference: (deg latent, tokens, f_hat, refined latent, image in [0, 1])."""
    with torch.no_grad():
        z = vae.encoder(lq01 * 2 - 1)
        tokens, f_hat, hidden = greedy_rollout(sd, vae, z, patch_nums, H)
        B, C, G, _ = f_hat.shape
        refined = refiner(sd, f_hat.flatten(2).transpose(1, 2), hidden, refiner_heads)
        refined = refined.transpose(1, 2).reshape(B, C, G, G)
        img = vae.decoder(vae.post_quant_conv(refined)).clamp(-1, 1).add(1).mul(0.5)
    return z, tokens, f_hat, refined, img
