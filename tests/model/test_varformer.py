"""The assembled models at small width (vae_ch=32, VAR depth 2): shapes at every level (docs/architecture.md), batch
independence, training_outputs == __call__, gradient routing of the official losses (docs/official-differences.md)."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from varformer.model import ModelInputError, VarFormer, VarFormerStage1
from varformer.model.prior_rollout import greedy_rollout

CH = 32
W = [CH * m for m in (1, 1, 2, 2, 4)]           # level widths: 32, 32, 64, 64, 128
SIZES = [256, 128, 64, 32, 16]

# which parameter groups each official loss term reaches (the losses table in varformer/training/losses.py)
ROUTES = {
    "pixel": {"unet"},                           # L1 / PSNR / VGG on the restored image
    "feature": {"adapter"},                      # 0.5 * MSE(lq_feat, sg(F_gt)), straight-through
    "token_ce": {"cross_attn", "var_embed_head"},  # 0.1 * CE(logits, idx_gt) of the greedy rollout
}


def group_of(name: str) -> str:
    if name.startswith(("unet_encoder.", "unet_decoder.")) or name == "input_weight":
        return "unet"
    if name.startswith("adapter."):
        return "adapter"
    if name.startswith("cross_attn."):
        return "cross_attn"
    if name.startswith("var.") and not name.startswith("var.blocks."):
        return "var_embed_head"
    return "frozen"


def photos(n):
    from skimage import data
    from skimage.transform import resize
    imgs = [data.astronaut(), data.coffee(), data.chelsea()][:n]
    return torch.stack([torch.from_numpy(resize(i, (256, 256), anti_aliasing=True).astype(np.float32)).permute(2, 0, 1)
                        for i in imgs])


def make_small(cls, seed=0, **kw):
    torch.manual_seed(seed)
    m = cls(depth=2, vae_ch=CH, **kw)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # wake up the zero-initialised gates so that every path matters
        for blk in m.adapter.blocks:
            blk.beta.copy_(torch.randn(blk.beta.shape, generator=g) * 0.3)
            blk.gamma.copy_(torch.randn(blk.gamma.shape, generator=g) * 0.3)
        for blk in m.var.blocks:
            blk.ada_lin[-1].weight.normal_(0, 0.02, generator=g)
    return m.eval()


@pytest.fixture(scope="module")
def run():
    """One inference call and one training_outputs call on the same image (the two full passes of this file)."""
    m = make_small(VarFormer, n_cross=1).freeze_official()
    lq = photos(2)
    shapes = {}

    def hook(name):
        def f(mod, args, out):
            shapes[name] = [tuple(a.shape) for a in args if isinstance(a, torch.Tensor)]
        return f

    handles = [m.unet_encoder.guidance[f"level{i}"].register_forward_hook(hook(f"enc{i}")) for i in range(1, 5)]
    handles += [m.unet_decoder.guidance[f"level{i}"].register_forward_hook(hook(f"dec{i}")) for i in range(1, 5)]
    handles.append(m.unet_decoder.up[0].block[0].register_forward_hook(hook("dec0")))
    handles.append(m.unet_decoder.register_forward_hook(hook("decoder")))
    handles += [mod.register_forward_hook(hook(name)) for name, mod in (
        ("vq_dec.up0", m.vae.decoder.up[0].block[0]), ("vq_dec.conv_out", m.vae.decoder.conv_out),
        ("block0", m.var.blocks[0]), ("block1", m.var.blocks[1]))]
    handles.append(m.adapter.register_forward_hook(
        lambda mod, args, out: shapes.__setitem__("adapter_io", (args[0].detach(), out.detach()))))
    out = m(lq[:1])                                 # inference
    t = m.training_outputs(lq[:1])                  # autograd graph
    for h in handles:
        h.remove()
    return m, lq, out, t, shapes


def test_shapes_at_every_level(run):
    m, lq, out, t, shapes = run
    assert out.shape == (1, 3, 256, 256) and 0 <= out.min() and out.max() <= 1
    assert t.restored.shape == (1, 3, 256, 256) and t.restored.abs().max() <= 1
    assert t.lq_feat.shape == (1, 32, 16, 16)
    assert t.logits.shape == (1, 680, 4096) and t.logits.dtype == torch.float32
    assert [tuple(x.shape) for x in t.tokens] == [(1, pn * pn) for pn in (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)]
    assert t.priors.shape == (1, 10, 32, 16, 16)
    assert sorted(t.dae_weights) == sorted([f"encoder.level{i}" for i in range(1, 5)]
                                           + [f"decoder.level{i}" for i in range(1, 5)])
    for w in t.dae_weights.values():
        assert w.shape == (1, 10)
        torch.testing.assert_close(w.sum(1), torch.ones(1))
    # encoder: level input h and VQVAE-encoder feature V_i at Lvl 1..4
    enc_in = {1: W[0], 2: W[1], 3: W[2], 4: W[3]}
    for i in range(1, 5):
        h, v, p = shapes[f"enc{i}"]
        assert h == (1, enc_in[i], SIZES[i], SIZES[i]) and v == (1, W[i], SIZES[i], SIZES[i])
        assert p == (1, 10, 32, 16, 16)
    # decoder: h entering Lvl 4..1 and the VQVAE-decoder feature D_i; Lvl 0 input; skips E_0..E_4 and y
    for i in range(1, 5):
        h, d, _ = shapes[f"dec{i}"]
        assert h == (1, W[i], SIZES[i], SIZES[i]) and d == (1, W[i], SIZES[i], SIZES[i])
    assert shapes["dec0"] == [(1, W[0], 256, 256)]
    y, *skips_priors = shapes["decoder"]
    assert y == (1, 32, 16, 16)


def test_training_outputs_equal_call(run):
    m, lq, out, t, _ = run
    torch.testing.assert_close(t.restored.detach().add(1).mul(0.5).clamp(0, 1), out, atol=2e-5, rtol=0)


def test_per_image_equals_batched(run):
    """Rows only mix inside the VAR loop (the official re-cut, applied per image pair); the tokenizer side and the
    rollout of a batch must give each image what it gets alone. (The U-Net is per-sample by construction --
    GroupNorm, InstanceNorm, windows and anchors never cross images -- and its blocks are checked batched against
    per-sample formulas in test_blocks.py.)"""
    m, lq, _, t, _ = run
    with torch.no_grad():
        _, _, r2 = m._adapt_and_rollout((lq - 0.5) / 0.5)      # image 0 with image 1 beside it
    assert all(torch.equal(a[:1], b) for a, b in zip(r2.tokens, t.tokens))
    torch.testing.assert_close(r2.logits[:1], t.logits.detach(), atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(r2.priors[:1], t.priors, atol=1e-5, rtol=1e-5)
    assert not all(torch.equal(a[:1], a[1:]) for a in r2.tokens)  # the two images do differ


def test_rollout_outputs_are_consistent(run):
    m, lq, _, t, shapes = run
    # tokens are the argmax of the returned logits, priors are the per-scale increments of f_hat
    ends = np.cumsum([pn * pn for pn in (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)])
    starts = np.concatenate([[0], ends[:-1]])
    for tok, s, e in zip(t.tokens, starts, ends):
        assert torch.equal(tok, t.logits[:, s:e].argmax(-1))
    fhat = m.vae.indices_to_fhat(t.tokens)[-1]
    torch.testing.assert_close(t.priors.sum(1), fhat, atol=1e-5, rtol=1e-5)
    # lq_feat has the value of the quantised adapted latent
    f, f_a = shapes["adapter_io"]
    assert f.shape == (1, 32, 16, 16)
    f_lq = m.vae.f_to_indices_and_fhats(f_a)[1][-1]
    torch.testing.assert_close(t.lq_feat.detach(), f_lq, atol=1e-5, rtol=1e-5)


def test_gradient_routing_per_loss_term(run):
    m, lq, _, t, _ = run
    gt = lq[:1].flip(-1) * 2 - 1                       # any target image and token map will do
    idx_gt = torch.cat(t.tokens, dim=1).flip(-1)
    f_gt = torch.randn(1, 32, 16, 16)
    losses = {
        "pixel": (t.restored - gt).abs().mean(),
        "feature": 0.5 * F.mse_loss(t.lq_feat, f_gt.detach()),
        "token_ce": 0.1 * F.cross_entropy(t.logits.flatten(0, 1), idx_gt.flatten()),
    }
    params = [(n, p) for n, p in m.named_parameters() if p.requires_grad]
    assert not any(group_of(n) == "frozen" for n, _ in params)   # freeze_official froze exactly those
    for term, loss in losses.items():
        grads = torch.autograd.grad(loss, [p for _, p in params], retain_graph=True, allow_unused=True)
        reached = {group_of(n) for (n, _), g in zip(params, grads) if g is not None and g.abs().sum() > 0}
        assert reached == ROUTES[term], term
        # inside the reached groups every parameter is on the graph (no dead, unused parameters)
        unused = [n for (n, _), g in zip(params, grads) if group_of(n) in ROUTES[term] and g is None]
        assert unused == [], (term, unused[:5])


def test_input_errors():
    with torch.device("meta"):
        m = VarFormer(depth=2, vae_ch=CH, n_cross=1)
    with pytest.raises(ModelInputError, match="256x256"):
        m(torch.rand(1, 3, 128, 256, device="meta"))
    with pytest.raises(ModelInputError, match=r"\(B, 3, 256, 256\)"):
        m(torch.rand(1, 1, 256, 256, device="meta"))
    with pytest.raises(ValueError, match="n_cross"):
        VarFormer(depth=2, vae_ch=CH, n_cross=3)


def test_stage1_model():
    m = make_small(VarFormerStage1, n_cross=2)
    lq = photos(1)
    out = m(lq)
    t = m.training_outputs(lq)
    assert out.shape == (1, 3, 256, 256)
    assert t.logits.shape == (1, 680, 4096) and t.lq_feat.shape == (1, 32, 16, 16)
    # the stage-1 output is VAR's reconstruction of the greedy tokens
    torch.testing.assert_close(t.restored.detach(), m.vae.indices_to_img(t.tokens), atol=1e-5, rtol=0)
    torch.testing.assert_close(out, t.restored.detach().add(1).mul(0.5).clamp(0, 1), atol=2e-5, rtol=0)
    # bf16 autocast: the tokenizer side (encoder, adapter, quantizer) and the VAR loop stay float32 by default...
    x = (lq - 0.5) / 0.5
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        _, lq_feat16, r16 = m._adapt_and_rollout(x)
    assert torch.equal(lq_feat16, t.lq_feat.detach())
    assert all(torch.equal(a, b) for a, b in zip(r16.tokens, t.tokens))
    torch.testing.assert_close(r16.logits, t.logits.detach(), atol=1e-4, rtol=1e-5)
    # ...and with bf16_transformer the blocks follow autocast while the logits and the tokenizer stay float32
    m.bf16_transformer = True
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        _, lq_feat16, r16 = m._adapt_and_rollout(x)
    m.bf16_transformer = False
    assert torch.equal(lq_feat16, t.lq_feat.detach())
    assert r16.logits.dtype == torch.float32 and r16.f_hat.dtype == torch.float32
    assert not torch.allclose(r16.logits, t.logits.detach(), atol=1e-4, rtol=1e-5)


def test_rollout_without_cross_attention_is_vars_greedy_sampler():
    m = make_small(VarFormerStage1, n_cross=0)
    x_lq = torch.randn(2, 679, 32)
    with torch.no_grad():
        r = greedy_rollout(m.var, m.cross_attn, x_lq, cfg=0.5, head_layout="official")
        ref = m.var.sample(2, label_B=-1, cfg=0.5, greedy=True)
    assert all(torch.equal(a, b) for a, b in zip(r.tokens, ref.idx_Bl))
    torch.testing.assert_close(r.f_hat, ref.f_hat, atol=1e-5, rtol=1e-5)


def test_standard_head_layout_rollout_is_per_image():
    m = make_small(VarFormerStage1, n_cross=1, head_layout="standard")
    x_lq = torch.randn(2, 679, 32)
    with torch.no_grad():
        both = greedy_rollout(m.var, m.cross_attn, x_lq, cfg=0.5, head_layout="standard")
        one = greedy_rollout(m.var, m.cross_attn, x_lq[1:], cfg=0.5, head_layout="standard")
    assert all(torch.equal(a[1:], b) for a, b in zip(both.tokens, one.tokens))
    torch.testing.assert_close(both.logits[1:], one.logits, atol=1e-4, rtol=1e-5)



def test_unused_work_is_skipped(run):
    """The RGB head and full-resolution level of the VQVAE decoder never run without dec_adjust, and VAR block 0
    runs once for both CFG halves (B rows) while later blocks see 2B rows."""
    m, lq, out, t, shapes = run
    assert "vq_dec.up0" not in shapes and "vq_dec.conv_out" not in shapes
    assert shapes["block0"][0][0] == 1 and shapes["block1"][0][0] == 2


def test_prepare_inference_bf16_weights(run):
    """bf16-held weights give exactly the bf16-autocast outputs of the float32-held model (channels-last
    convolutions: the same up to bf16 rounding); only the conv/linear weights autocast would cast anyway are
    converted, never the tokenizer side, the softmax heads or the norms."""
    import copy
    m, lq, out, _, _ = run
    m = copy.deepcopy(m)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y_autocast = m(lq[:1])
    m.prepare_inference("bf16", channels_last=False)
    assert torch.equal(m(lq[:1]), y_autocast)
    m.prepare_inference("bf16")
    conv_in = m.unet_encoder.conv_in.weight
    assert conv_in.is_contiguous(memory_format=torch.channels_last) and not conv_in.is_contiguous()
    assert m.vae.encoder.conv_in.weight.is_contiguous()   # float32 tokenizer side untouched
    dtypes = {n: p.dtype for n, p in m.named_parameters()}
    bf16 = {n for n, d in dtypes.items() if d == torch.bfloat16}
    assert bf16 and all(n.startswith(("unet_encoder.", "unet_decoder.")) for n in bf16)
    for n in ("unet_encoder.guidance.level1.select.to_weights.weight", "unet_decoder.guidance.level2.fuse.to_logits.weight",
              "unet_decoder.theta", "unet_encoder.norm_out.weight", "input_weight"):
        assert dtypes[n] == torch.float32, n
    assert dtypes["unet_encoder.conv_in.weight"] == torch.bfloat16
    assert dtypes["unet_decoder.guidance.level1.aft.q.weight"] == torch.bfloat16
    assert not m.training
    y_held = m(lq[:1])                                 # default precision: the held one
    # other conv kernels: a bf16-rounding difference, of the order of bf16 autocast's own distance from fp32
    assert (y_held - y_autocast).abs().mean() <= 2 * (y_autocast - out).abs().mean()
    assert (y_held - out).abs().max() < 0.1            # and near the float32 output
    with pytest.raises(ValueError, match="bf16"):
        m(lq[:1], precision="fp32")
    with pytest.raises(ValueError, match="prepare_inference"):
        m.training_outputs(lq[:1])
    from varformer.model import save_varformer
    with pytest.raises(ValueError, match="float32"):
        save_varformer("unused.pt", m)
    m.prepare_inference("fp32")
    assert all(p.dtype == torch.float32 and p.is_contiguous() for p in m.parameters())
    assert m.weights_precision == "fp32"


def test_prepare_inference_bf16_transformer_dtypes():
    with torch.device("meta"):
        m = VarFormer(depth=2, vae_ch=CH, n_cross=1)
    m.prepare_inference("bf16", bf16_transformer=True)
    dtypes = {n: p.dtype for n, p in m.named_parameters()}
    assert dtypes["var.blocks.0.attn.mat_qkv.weight"] == torch.bfloat16
    assert dtypes["cross_attn.0.mat_kv.weight"] == dtypes["cross_attn.0.proj.weight"] == torch.bfloat16
    assert dtypes["var.blocks.0.attn.q_bias"] == dtypes["var.blocks.0.attn.scale_mul_1H11"] == torch.float32
    assert all(d == torch.float32 for n, d in dtypes.items()
               if n.startswith(("vae.", "adapter.")) or (n.startswith("var.") and not n.startswith("var.blocks.")))
    m.bf16_transformer = False
    with pytest.raises(ValueError, match="bf16_transformer"):
        m(torch.rand(1, 3, 256, 256, device="meta"))
    with pytest.raises(ValueError, match="precision"):
        m.prepare_inference("fp16")


def test_identity_start_returns_the_input():
    """input_weight_init=1.0 (short runs from scratch) starts the restorer as the identity, whatever the U-Net."""
    from varformer.model import VarFormer
    torch.manual_seed(0)
    m = VarFormer(depth=2, vae_ch=32, n_cross=1, input_weight_init=1.0).eval()
    lq = torch.rand(1, 3, 256, 256)
    assert torch.allclose(m(lq), lq, atol=1e-6)
    assert VarFormer(depth=2, vae_ch=32, n_cross=1).input_weight.item() == 0.5  # official default
