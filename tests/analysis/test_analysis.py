"""The three analysis commands offline on the demo set with a small random model: PNG + CSV each, and what the
CSVs hold follows from the definitions (token replacement end points, DAE weights summing to one)."""
import csv
import os

import pytest
import torch

from varformer.analysis.common import between_class_fraction, pca_2d
from varformer.analysis.scale_replacement import mixed_tokens
from varformer.cli import main
from varformer.data.demo_set import DemoSpec, ensure_demo
from varformer.metrics import psnr
from varformer.model import VarFormer, save_varformer

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


def _run(analysis, setup, out, benchmarks=("demo-rain", "demo-haze")):
    demo, weights, _ = setup
    return main(["analyze", analysis, "--weights", weights, "--root", demo, "--benchmarks", *benchmarks,
                 "--max-images", "1", "-o", str(out), "--device", "cpu"])


def _rows(path):
    with open(path) as fh:
        return list(csv.DictReader(fh))


def test_alignment(setup, tmp_path):
    assert _run("alignment", setup, tmp_path) == 0
    assert os.path.getsize(tmp_path / "alignment.png") > 10_000
    points = _rows(tmp_path / "alignment_points.csv")
    assert len(points) == 2 * 4 and {p["task"] for p in points} == {"rain", "haze"}
    assert {(p["image_kind"], p["features"]) for p in points} == {
        (k, f) for k in ("degraded", "clean") for f in ("before", "after")}
    summary = _rows(tmp_path / "alignment_summary.csv")
    assert [r["task"] for r in summary][:2] == ["rain", "haze"] and float(summary[0]["dist_degraded_clean_before"]) > 0


def test_scale_replacement(setup, tmp_path):
    demo, _, model = setup
    assert _run("scale-replacement", setup, tmp_path, ["demo-rain"]) == 0      # 21 decodes per image
    assert os.path.getsize(tmp_path / "scale_replacement.png") > 10_000
    rows = _rows(tmp_path / "scale_replacement.csv")
    assert len(rows) == 2 * 11
    rain = {(r["replaced"], int(r["k"])): float(r["psnr"]) for r in rows if r["task"] == "rain"}
    # k = 0: the degraded image's own tokens; k = 10: the clean image's, whichever end is replaced first
    assert rain[("coarse", 0)] == rain[("fine", 0)] and rain[("coarse", 10)] == rain[("fine", 10)]
    from varformer.analysis.common import images_per_task
    rain_pair = images_per_task(demo, ["demo-rain"], 1, log=None)[0]
    with torch.no_grad():
        clean = model.vae.indices_to_img(model.vae.img_to_indices(rain_pair.gt * 2 - 1)).add(1).mul(0.5)
    assert rain[("coarse", 10)] == pytest.approx(float(psnr(clean, rain_pair.gt, crop_border=4)[0]), abs=1e-3)


def test_mixed_tokens_takes_the_named_scales():
    lq = [torch.full((1, pn * pn), 1) for pn in (1, 2, 3)]
    gt = [torch.full((1, pn * pn), 2) for pn in (1, 2, 3)]
    assert [int(t[0, 0]) for t in mixed_tokens(lq, gt, 1, "coarse")] == [2, 1, 1]
    assert [int(t[0, 0]) for t in mixed_tokens(lq, gt, 2, "fine")] == [1, 2, 2]


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
