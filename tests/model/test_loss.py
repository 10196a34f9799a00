import math
from types import SimpleNamespace

import pytest
import torch

from varformer.config import load_config
from varformer.errors import ConfigError, WeightsNotFoundError
from varformer.backbone.vgg19 import VGG19_URL, VGGPerceptualLoss, find_vgg19_weights
from varformer.model.loss import (VarFormerLoss, feature_mse, negative_psnr, pixel_l1, psnr_loss, stage_terms,
                                  token_cross_entropy)


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory):
    from torchvision.models.vgg import cfgs, make_layers
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("vgg") / "vgg19-dcbb9e9d.pth"
    # random init in torchvision's key layout (conv trunk only: the loss never reads the classifier)
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in make_layers(cfgs["E"]).state_dict().items()}
    torch.save({f"features.{k}": torch.randn(s) * 0.05 for k, s in shapes.items()}, path)
    return str(path)


def _outputs(B=2, V=16, L=5, size=16, requires_grad=True):
    g = torch.Generator().manual_seed(1)
    mk = lambda *s: torch.randn(*s, generator=g).requires_grad_(requires_grad)
    return SimpleNamespace(restored=torch.tanh(mk(B, 3, size, size)), lq_feat=mk(B, 32, 4, 4), logits=mk(B, L, V))


def test_psnr_loss_matches_formula_and_negative_psnr_differs_by_a_constant():
    a, b = torch.rand(3, 3, 8, 8) * 2 - 1, torch.rand(3, 3, 8, 8) * 2 - 1
    mse = (a - b).pow(2).flatten(1).mean(1)
    assert psnr_loss(a, b).item() == pytest.approx((10 / math.log(10) * torch.log(mse + 1e-8)).mean().item(), 1e-6)
    # -PSNR on [-1, 1] images (peak-to-peak 2) = 10 log10(mse / 4): same gradient as the official loss
    assert negative_psnr(a, b).item() == pytest.approx((10 * torch.log10(mse / 4)).mean().item(), 1e-5)
    assert (psnr_loss(a, b) - negative_psnr(a, b)).item() == pytest.approx(10 * math.log10(4), 1e-4)


def test_token_ce_and_feature_mse():
    logits = torch.randn(2, 5, 7)
    tokens = [torch.randint(0, 7, (2, 1)), torch.randint(0, 7, (2, 4))]
    ref = torch.nn.functional.cross_entropy(logits.reshape(-1, 7), torch.cat(tokens, 1).reshape(-1))
    assert token_cross_entropy(logits.bfloat16(), tokens).dtype == torch.float32
    assert torch.allclose(token_cross_entropy(logits, tokens), ref)
    with pytest.raises(ValueError, match="logits"):
        token_cross_entropy(logits, [torch.zeros(2, 3, dtype=torch.long)])
    f, t = torch.randn(2, 32, 4, 4, requires_grad=True), torch.randn(2, 32, 4, 4, requires_grad=True)
    feature_mse(f, t).backward()
    assert f.grad is not None and t.grad is None  # the clean target is a stop-gradient
    assert pixel_l1(torch.ones(2), torch.zeros(2)).item() == 1.0


def test_vgg_perceptual_loads_local_file_and_is_frozen(vgg_file):
    loss = VGGPerceptualLoss(vgg_file, "relu5_4", "l1")
    assert len(loss.features) == 36 and not any(p.requires_grad for p in loss.parameters())
    x = (torch.rand(1, 3, 32, 32) * 2 - 1).requires_grad_(True)
    assert loss(x, x.detach()).item() == 0.0
    y = loss(x, torch.zeros_like(x))
    y.backward()
    assert y.item() > 0 and x.grad.abs().sum() > 0
    l2 = VGGPerceptualLoss(vgg_file, "relu1_2", "l2")
    assert len(l2.features) == 4
    with pytest.raises(ConfigError, match="relu9_9"):
        VGGPerceptualLoss(vgg_file, "relu9_9")


def test_missing_vgg_weights_name_file_and_url(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(WeightsNotFoundError) as e:
        find_vgg19_weights(None, search_dirs=(str(tmp_path),))
    assert "vgg19-dcbb9e9d.pth" in str(e.value) and VGG19_URL in str(e.value) and "perceptual=0" in str(e.value)
    with pytest.raises(WeightsNotFoundError, match="nope.pth"):
        find_vgg19_weights(str(tmp_path / "nope.pth"))
    hub = tmp_path / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    (hub / "vgg19-dcbb9e9d.pth").write_bytes(b"x")
    assert find_vgg19_weights(None, search_dirs=(str(tmp_path),)) == str(hub / "vgg19-dcbb9e9d.pth")


def test_official_weights_and_terms(vgg_file):
    cfg = load_config(None, [f"train.loss.vgg_path={vgg_file}"]).train.loss
    s1 = VarFormerLoss.from_config(cfg, 1)
    assert s1.weights == {"token_ce": 0.1, "feature_l2": 0.5} and s1.vgg is None
    s2 = VarFormerLoss.from_config(cfg, 2)
    assert s2.weights == {"pixel_l1": 1.0, "psnr": 0.5, "perceptual": 1.0, "token_ce": 0.1, "feature_l2": 0.5}
    out = _outputs()
    gt = torch.rand(2, 3, 16, 16) * 2 - 1
    tokens = [torch.randint(0, 16, (2, 1)), torch.randint(0, 16, (2, 4))]
    feat = torch.randn(2, 32, 4, 4)
    r = s2(out, gt, tokens, feat)
    expect = (pixel_l1(out.restored, gt) + 0.5 * psnr_loss(out.restored, gt) + s2.vgg(out.restored, gt)
              + 0.1 * token_cross_entropy(out.logits, tokens) + 0.5 * feature_mse(out.lq_feat, feat))
    assert torch.allclose(r.total, expect)
    assert {"total", "pixel_l1", "psnr", "perceptual", "token_ce", "feature_l2", "metric_token_acc"} <= set(r.terms)
    r1 = s1(out, gt, tokens, feat)
    assert "metric_pixel_l1" in r1.terms and "pixel_l1" not in r1.terms


def test_paper_formulation_and_switches(capsys):
    assert stage_terms("paper", 1) == ["token_ce", "feature_l2"] and stage_terms("paper", 2) == ["psnr", "perceptual"]
    cfg = load_config(None, ["train.loss.formulation=paper", "train.loss.perceptual=0"]).train.loss
    loss = VarFormerLoss.from_config(cfg, 2)
    assert loss.weights == {"psnr": 0.5}
    assert "WITHOUT the VGG19 perceptual" in capsys.readouterr().out
    with pytest.raises(ConfigError, match="formulation"):
        VarFormerLoss(load_config(None, ["train.loss.formulation=mine"]).train.loss, 1)
    with pytest.raises(ConfigError, match="nothing to train"):
        VarFormerLoss(load_config(None, ["train.loss.token_ce=0", "train.loss.feature_l2=0"]).train.loss, 1)
    with pytest.raises(ConfigError, match=">= 0"):
        VarFormerLoss(load_config(None, ["train.loss.psnr=-1"]).train.loss, 2)


def test_image_loss_is_the_weighted_image_terms_and_none_in_stage_1():
    cfg = load_config(None, ["train.loss.perceptual=0"]).train.loss
    pred, gt = torch.rand(2, 3, 8, 8) * 2 - 1, torch.rand(2, 3, 8, 8) * 2 - 1
    got = VarFormerLoss(cfg, 2).image_loss(pred, gt)
    assert torch.allclose(got, pixel_l1(pred, gt) + 0.5 * psnr_loss(pred, gt))
    assert VarFormerLoss(cfg, 1).image_loss(pred, gt) is None
