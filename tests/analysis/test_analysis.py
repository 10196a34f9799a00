"""The analysis commands offline on the demo set with a small random model: PNG + CSV each, and what the CSVs hold
follows from the definitions (VAR's prediction replacing one scale, the clean-token oracle's end points, DAE
weights summing to one); the optional modules are checked before any compute and their absence costs the figure,
not the numbers."""
import csv
import importlib.util
import os

import pytest
import torch

from varformer.backbone.var import VAR
from varformer.cli import main
from varformer.data.demo_set import DemoSpec, ensure_demo
from varformer.methods.figures import between_class_fraction, images_per_task, pca_2d
from varformer.metrics import psnr
from varformer.model import VarFormer, save_varformer
from varformer.model.analysis.scale_replacement import mixed_tokens, replaced_scale

SPEC = DemoSpec(test_hw=(40, 48), train_hw=(40, 40), test_per_photo=1, train_per_photo=1)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("analysis")
    demo = ensure_demo(str(tmp / "demo"), SPEC, log=None)
    torch.manual_seed(0)
    model = VarFormer(depth=2, vae_ch=32, n_cross=1)
    weights = str(tmp / "small.safetensors")
    save_varformer(weights, model)
    return demo, weights, model.eval()


def _run(analysis, setup, out, benchmarks=("demo-rain", "demo-haze"), extra=()):
    demo, weights, _ = setup
    return main(["analyze", analysis, "--weights", weights, "--root", demo, "--benchmarks", *benchmarks,
                 "--max-images", "1", "-o", str(out), "--device", "cpu", *extra])


def _rows(path):
    with open(path) as fh:
        return list(csv.DictReader(fh))


def _decode_psnr(vae, idx, gt):
    with torch.no_grad():
        img = vae.indices_to_img(idx).add(1).mul(0.5)
    return float(psnr(img, gt, crop_border=4)[0])


def test_alignment_var_alone_and_trained_model(setup, tmp_path, capsys):
    pytest.importorskip("sklearn")
    assert _run("alignment", setup, tmp_path) == 0
    out = capsys.readouterr().out
    assert "projection: tsne" in out and "the VAR inside the weights" in out
    assert os.path.getsize(tmp_path / "alignment.png") > 10_000
    points = _rows(tmp_path / "alignment_points.csv")
    assert len(points) == 2 * 2 * 3 and {p["task"] for p in points} == {"rain", "haze"}
    assert {(p["image_kind"], p["features"]) for p in points} == {
        (k, f) for k in ("degraded", "clean") for f in ("before", "var", "model")}
    assert {p["projection"] for p in points} == {"tsne"}
    summary = _rows(tmp_path / "alignment_summary.csv")
    assert [r["task"] for r in summary][:2] == ["rain", "haze"]
    assert {"dist_degraded_clean_before", "dist_degraded_clean_var", "dist_degraded_clean_model"} <= set(summary[0])
    assert float(summary[0]["dist_degraded_clean_before"]) > 0


@pytest.fixture(scope="module")
def other_var(setup, tmp_path_factory):
    """A "pretrained VAR" file that is not the VAR inside the weights."""
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("var") / "var_d2.pth"
    torch.save(VAR(setup[2].vae, depth=2).state_dict(), path)
    return path


def test_missing_optional_modules_cost_the_figure_not_the_numbers(setup, other_var, tmp_path, capsys, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a, **k: None if name in ("matplotlib", "sklearn") else real(name, *a, **k))
    assert _run("alignment", setup, tmp_path, ["demo-rain"], ["--after", "var", "--var", str(other_var)]) == 0
    lines = capsys.readouterr().out.splitlines()
    # said first, before the weights are even loaded; one line each, no traceback
    assert lines[0].startswith("note: sklearn is not installed: PCA instead of t-SNE")
    assert lines[1].startswith("note: matplotlib is not installed: no PNG")
    assert any("projection: pca" in line and f"the pretrained VAR {other_var} (depth 2)" in line for line in lines)
    assert not (tmp_path / "alignment.png").exists()
    points = _rows(tmp_path / "alignment_points.csv")
    assert {p["projection"] for p in points} == {"pca"} and {p["features"] for p in points} == {"before", "var"}


def test_scale_replacement_by_vars_prediction_and_the_oracle(setup, tmp_path, capsys):
    demo, _, model = setup
    assert _run("scale-replacement", setup, tmp_path, ["demo-rain"], ["--variant", "both"]) == 0
    assert os.path.getsize(tmp_path / "scale_replacement.png") > 10_000
    assert "best single scale replaced by VAR's prediction" in capsys.readouterr().out
    rows = _rows(tmp_path / "scale_replacement.csv")
    pred = {int(r["k"]): float(r["psnr"]) for r in rows if r["variant"] == "prediction"}
    assert len(pred) == 11 and {float(r["gain_db"]) for r in rows if r["k"] == "0"} == {0.0}
    pair = images_per_task(demo, ["demo-rain"], 1, log=None)[0]
    vae, var = model.vae, model.var
    with torch.no_grad():
        idx = vae.img_to_indices(pair.lq * 2 - 1)
        logits = var(torch.full((1,), var.num_classes), vae.indices_to_var_input(idx))
        clean_idx = vae.img_to_indices(pair.gt * 2 - 1)
    predicted = [logits[:, b:e].argmax(-1) for b, e in var.begin_ends]
    assert pred[0] == pytest.approx(_decode_psnr(vae, idx, pair.gt), abs=1e-3)      # the degraded reconstruction
    for k in (1, 10):   # scale k (1-based) of the degraded tokens replaced by VAR's prediction of it
        mix = [predicted[i] if i == k - 1 else idx[i] for i in range(len(idx))]
        assert pred[k] == pytest.approx(_decode_psnr(vae, mix, pair.gt), abs=1e-3)
    # the oracle, labelled as such: k = 0 the degraded image's own tokens, k = 10 the clean image's, from both ends
    oracle = {(r["replaced"], int(r["k"])): float(r["psnr"]) for r in rows if r["variant"] == "oracle (clean tokens)"}
    assert len(oracle) == 2 * 11 and oracle[("coarse", 0)] == oracle[("fine", 0)] == pred[0]
    assert oracle[("coarse", 10)] == oracle[("fine", 10)]
    assert oracle[("coarse", 10)] == pytest.approx(_decode_psnr(vae, clean_idx, pair.gt), abs=1e-3)


def test_the_analysed_var_is_the_file_given(setup, other_var):
    from varformer.model.analysis.common import analysed_var, next_scale_prediction
    _, _, model = setup
    own, label = analysed_var(model, None, torch.device("cpu"))
    assert own is model.var and "inside the weights" in label
    loaded, label = analysed_var(model, str(other_var), torch.device("cpu"))
    assert "pretrained VAR" in label and loaded.vae is model.vae
    idx = [torch.randint(0, 4096, (1, pn * pn)) for pn in model.vae.patch_nums]
    assert any(not torch.equal(a, b) for a, b in zip(next_scale_prediction(own, idx),
                                                     next_scale_prediction(loaded, idx)))


def test_token_mixtures_take_the_named_scales():
    lq = [torch.full((1, pn * pn), 1) for pn in (1, 2, 3)]
    gt = [torch.full((1, pn * pn), 2) for pn in (1, 2, 3)]
    assert [int(t[0, 0]) for t in mixed_tokens(lq, gt, 1, "coarse")] == [2, 1, 1]
    assert [int(t[0, 0]) for t in mixed_tokens(lq, gt, 2, "fine")] == [1, 2, 2]
    assert [int(t[0, 0]) for t in replaced_scale(lq, gt, 1)] == [1, 2, 1]


def test_dae_weights(setup, tmp_path):
    assert _run("dae-weights", setup, tmp_path) == 0
    assert os.path.getsize(tmp_path / "dae_weights.png") > 10_000
    rows = _rows(tmp_path / "dae_weights.csv")
    assert len(rows) == 2 * 8 and {r["level"] for r in rows} == {
        f"{s}.level{i}" for s in ("encoder", "decoder") for i in range(1, 5)}
    for r in rows:
        assert sum(float(v) for k, v in r.items() if k.startswith("scale_")) == pytest.approx(1, abs=1e-5)


def test_prior_free_model_is_refused(setup, tmp_path, capsys):
    torch.manual_seed(0)
    save_varformer(tmp_path / "none.safetensors", VarFormer(depth=2, vae_ch=32, n_cross=0, prior="none", aft=False))
    demo = setup[0]
    assert main(["analyze", "dae-weights", "--weights", str(tmp_path / "none.safetensors"), "--root", demo,
                 "--benchmarks", "demo-rain", "--max-images", "1", "-o", str(tmp_path)]) == 2
    assert "needs a stage-2 VarFormer with the VAR prior" in capsys.readouterr().err


def test_pca_and_task_separation():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 6, generator=g).double().numpy()
    x[:20, 0] += 10                                          # two classes far apart along one axis
    xy = pca_2d(x)
    assert abs(xy[:20, 0].mean() - xy[20:, 0].mean()) > 8    # PC 1 is that axis
    labels = ["a"] * 20 + ["b"] * 20
    assert between_class_fraction(x, labels) > 0.8 and between_class_fraction(x, ["a", "b"] * 20) < 0.1
