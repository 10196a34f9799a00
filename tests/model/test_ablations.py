"""The paper's ablation switches (docs/ablations.md): each changes exactly its modules (state-dict keys) and its
step of the forward pass; with the defaults the model is today's (same keys, same outputs)."""
import re

import pytest
import torch

from varformer.errors import ConfigError
from varformer.model import VarFormer, VarFormerSettings, build_varformer, load_varformer, save_varformer
from varformer.model.settings import architecture_of

SMALL = dict(depth=2, vae_ch=32, n_cross=1)
TODAY = dict(prior="dae", aft=True, mixup_skip=True)
NO_MIX = dict(prior="dae", aft=True, mixup_skip=False)
NO_AFT = dict(prior="dae", aft=False, mixup_skip=False)
FIXED = dict(prior="fixed", aft=False, mixup_skip=False)
NONE = dict(prior="none", aft=False, mixup_skip=False, n_cross=0)


def shapes(**switches):
    kw = dict(SMALL, **switches)
    with torch.device("meta"):
        sd = VarFormer(**kw).state_dict()
    return {k: tuple(v.shape) for k, v in sd.items()}


def test_each_switch_removes_exactly_its_modules():
    today = shapes()
    assert list(shapes(**TODAY)) == list(today)          # the full row: the same keys in the same order
    rows = [today, shapes(**NO_MIX), shapes(**NO_AFT), shapes(**FIXED), shapes(**NONE)]
    for bigger, smaller in zip(rows, rows[1:]):
        assert smaller.keys() <= bigger.keys()            # a switch only removes modules, never adds or reshapes
        assert all(bigger[k] == v for k, v in smaller.items())
    removed = [set(a) - set(b) for a, b in zip(rows, rows[1:])]
    assert removed[0] == {"unet_decoder.theta"}
    assert removed[1] == {k for k in rows[1] if re.search(r"\.guidance\.level[1-4]\.aft\.", k)}
    assert {re.match(r"unet_(en|de)coder\.guidance\.level\d", k).group(0) for k in removed[1]} == {
        f"unet_{side}coder.guidance.level{i}" for side in ("en", "de") for i in range(1, 5)}
    assert removed[2] == {k for k in rows[2] if re.search(r"\.guidance\.level\d\.(bridge|fuse|select\.rstbs|"
                                                          r"select\.to_weights)\.", k)}
    assert {k for k in rows[3] if ".guidance." in k} == {      # "fixed": the projection to the level remains
        k for k in rows[3] if re.search(r"\.guidance\.level\d\.select\.(proj|upsample_conv)\.", k)}
    assert removed[3] == {k for k in rows[3] if k.startswith(("var.", "adapter.", "cross_attn.")) or ".guidance." in k}
    assert all(k.startswith(("vae.", "unet_encoder.", "unet_decoder.", "input_weight")) for k in rows[4])


def test_settings_metadata_and_tensors_name_the_row(tmp_path):
    assert VarFormerSettings(**SMALL).to_metadata() == dict(stage=2, depth=2, vae_ch=32, n_cross=1,
                                                             dec_adjust=False, cfg=0.5, head_layout="official")
    for row in (NO_MIX, NO_AFT, FIXED, NONE):
        s = VarFormerSettings(**dict(SMALL, **row))
        with torch.device("meta"):
            model = build_varformer(s)
        got = architecture_of(model.state_dict())
        assert {k: got[k] for k in TODAY} == {k: row[k] for k in TODAY}
        assert VarFormerSettings.from_metadata(s.to_metadata()) == s
    torch.manual_seed(0)
    model = VarFormer(**dict(SMALL, **FIXED))
    save_varformer(tmp_path / "fixed.safetensors", model)
    back = load_varformer(tmp_path / "fixed.safetensors")
    assert back.settings() == model.settings() and back.unet_decoder.theta is None


@pytest.mark.parametrize("bad, match", [
    (dict(prior="none", aft=False, mixup_skip=True, n_cross=1), "n_cross 0"),
    (dict(prior="none", aft=True, n_cross=0), "aft false"),
    (dict(prior="none", aft=False, n_cross=0, dec_adjust=True), "dec_adjust false"),
    (dict(prior="soft"), "prior must be one of"),
    (dict(stage=1, aft=False), "stage-1 model has no U-Net"),
])
def test_impossible_rows_are_refused(bad, match):
    with pytest.raises(ConfigError, match=match):
        VarFormerSettings(**dict(dict(depth=2, vae_ch=32, n_cross=1), **bad)).validate()


def run_with_hooks(model, lq):
    """One forward; returns (names of the modules that ran, per-guidance captures, decoder captures)."""
    ran, cap = set(), {}
    handles = []
    for name, mod in model.named_modules():
        handles.append(mod.register_forward_hook(lambda m, a, o, name=name: ran.add(name)))
    for side in ("encoder", "decoder"):
        for lvl, g in getattr(model, f"unet_{side}").guidance.items():
            key = f"{side}.{lvl}"
            handles.append(g.register_forward_hook(lambda m, a, o, key=key: cap.__setitem__(key, (a[0], o[0]))))
            handles.append(g.select.register_forward_hook(
                lambda m, a, o, key=key: cap.__setitem__(key + ".prior", o[0])))
            if g.fuse is not None:
                handles.append(g.fuse.register_forward_hook(lambda m, a, o, key=key: cap.__setitem__(key + ".fused", o)))
    dec = model.unet_decoder
    handles.append(dec.register_forward_pre_hook(lambda m, a: cap.__setitem__("skips", a[1])))
    handles.append(dec.mid.register_forward_hook(lambda m, a, o: cap.__setitem__("mid", o)))
    handles.append(dec.up[4].block[0].register_forward_hook(lambda m, a, o: cap.__setitem__("level4_in", a[0])))
    with torch.no_grad():
        out = model(lq)
    for h in handles:
        h.remove()
    return out, ran, cap


@pytest.fixture(scope="module")
def lq():
    g = torch.Generator().manual_seed(0)
    return torch.rand(1, 3, 256, 256, generator=g)


def test_fixed_prior_without_aft_or_mixup_adds_the_prior_and_the_skip(lq):
    torch.manual_seed(0)
    model = VarFormer(**dict(SMALL, **FIXED)).eval()
    _, ran, cap = run_with_hooks(model, lq)
    assert {"var.blocks.0", "adapter", "cross_attn.0", "vae.decoder.mid"} <= ran     # the VAR prior is computed
    for key in [f"{s}.level{i}" for s in ("encoder", "decoder") for i in range(1, 5)]:
        h_in, h_out = cap[key]
        torch.testing.assert_close(h_out, h_in + cap[key + ".prior"])             # uniform weights, prior added
    h_in, _ = cap["decoder.level4"]
    torch.testing.assert_close(h_in, cap["mid"] + cap["skips"][4])                # plain additive skip


def test_no_prior_runs_the_unet_alone(lq):
    torch.manual_seed(0)
    model = VarFormer(**dict(SMALL, **NONE)).eval()
    out, ran, _ = run_with_hooks(model, lq)
    outside = {n for n in ran if n and not n.startswith(("unet_encoder", "unet_decoder"))}
    assert outside == {"vae.quant_conv"}               # no VQVAE encoder/decoder, quantiser or VAR rollout
    assert out.shape == lq.shape


def test_full_row_is_todays_model_and_its_dae_aft_path(lq):
    torch.manual_seed(0)
    today = VarFormer(**SMALL).eval()
    row = build_varformer(VarFormerSettings(**dict(SMALL, **TODAY))).eval()
    row.load_state_dict(today.state_dict())
    out, ran, cap = run_with_hooks(row, lq)
    assert torch.equal(out, today(lq))
    for key in [f"{s}.level{i}" for s in ("encoder", "decoder") for i in range(1, 5)]:
        side, level = key.split(".")
        aft = getattr(row, f"unet_{side}").guidance[level].aft
        with torch.inference_mode():                                                    # AFT after the fusion
            torch.testing.assert_close(cap[key][1], aft(cap[key + ".fused"], cap[key + ".prior"]))
    s = torch.sigmoid(row.unet_decoder.theta[4].detach())
    torch.testing.assert_close(cap["decoder.level4"][0], s * cap["mid"] + (1 - s) * cap["skips"][4])


def test_dae_without_aft_passes_the_fused_feature_on(lq):
    torch.manual_seed(0)
    model = VarFormer(**dict(SMALL, **NO_AFT)).eval()
    _, ran, cap = run_with_hooks(model, lq)
    for key in [f"{s}.level{i}" for s in ("encoder", "decoder") for i in range(1, 5)]:
        assert torch.equal(cap[key][1], cap[key + ".fused"])
