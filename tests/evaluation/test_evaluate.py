import csv
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from varformer import metrics as M
from varformer.cli import main
from varformer.data.demo_set import DemoSpec, ensure_demo
from varformer.data.benchmark_data import benchmark_dataset
from varformer.data.resize import resize_bilinear
from varformer.errors import ConfigError, DataError, WeightsNotFoundError
from varformer.evaluation import evaluate, get_protocol, official_test_protocol, run_restorer, with_metric_overrides
from varformer.inference import Restorer, identity_restorer, load_restorer

SMALL = DemoSpec(test_hw=(40, 48), train_hw=(40, 40), test_per_photo=1, train_per_photo=1)
FIXTURES = os.path.join(os.path.dirname(os.path.dirname(__file__)), "fixtures")


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    return ensure_demo(str(tmp_path_factory.mktemp("cache") / "demo"), SMALL, log=None)


def test_bilinear_resize_matches_opencv_inter_linear():
    ref = np.load(os.path.join(FIXTURES, "eval_cv2_inter_linear.npz"))  # made with cv2.resize(INTER_LINEAR)
    src = torch.from_numpy(ref["src"]).permute(2, 0, 1)
    for key, size in (("down", 16), ("up", 64)):
        ours = resize_bilinear(src, size).permute(1, 2, 0).numpy()
        assert np.abs(ours - ref[key]).max() < 1e-6


def test_official_test_protocol():
    img = np.random.default_rng(0).integers(0, 256, (30, 50, 3), dtype=np.uint8)
    out = official_test_protocol(lambda x: x, img)
    assert out.shape == (256, 256, 3) and out.dtype == np.uint8
    expect = resize_bilinear(torch.from_numpy(img.astype(np.float32) / 255).permute(2, 0, 1), 256)
    assert np.array_equal(out, expect.clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).numpy())
    calls = []
    official_test_protocol(lambda x: calls.append(x.shape) or x, img)
    assert calls == [(1, 3, 256, 256)]
    with pytest.raises(DataError, match="RGB uint8"):
        official_test_protocol(lambda x: x, img[..., 0])


def test_paper_protocol_numbers_are_the_metrics_of_resized_pairs(tmp_path):
    rng = np.random.default_rng(1)
    for sub in ("input", "target"):
        os.makedirs(tmp_path / "Test100" / sub)
        Image.fromarray(rng.integers(0, 256, (30, 44, 3), dtype=np.uint8)).save(tmp_path / "Test100" / sub / "7.png")
    res = evaluate(identity_restorer(), [("test100", str(tmp_path))], "paper", progress=False, log=None)
    item = benchmark_dataset("test100", str(tmp_path))[0]
    lq, gt = resize_bilinear(item["lq"], 256)[None], resize_bilinear(item["gt"], 256)[None]
    assert res.rows[0]["psnr"] == pytest.approx(float(M.psnr(lq, gt, crop_border=4)[0]))
    assert res.rows[0]["ssim"] == pytest.approx(float(M.ssim(lq, gt, crop_border=4)[0]))
    assert (res.rows[0]["height"], res.rows[0]["width"]) == (256, 256)


def test_full_protocol_tiles_fixed_size_restorers(demo_dir):
    seen = []

    def fixed32(x):
        seen.append(tuple(x.shape[-2:]))
        return x

    tiled = evaluate(Restorer("fixed32", fixed32, input_size=32), [("demo-rain", demo_dir)], "full",
                     overlap=8, progress=False, log=None)
    assert set(seen) == {(32, 32)}  # 40x48 images only ever reach the model as 32x32 tiles
    plain = evaluate(identity_restorer(), [("demo-rain", demo_dir)], "full", progress=False, log=None)
    assert [r["psnr"] for r in tiled.rows] == pytest.approx([r["psnr"] for r in plain.rows])
    assert tiled.rows[0]["height"] == 40 and tiled.rows[0]["width"] == 48


def test_restormer_pads_to_multiple_of_8():
    shapes = []
    r = Restorer("any", lambda x: shapes.append(tuple(x.shape[-2:])) or x)
    x = torch.rand(2, 3, 21, 30)
    out = run_restorer(r, x, get_protocol("restormer"))
    assert shapes == [(24, 32)] and torch.equal(out, x)


def test_cli_evaluate_both_protocols_and_refusal(demo_dir, tmp_path, capsys):
    out = str(tmp_path / "eval")
    args = ["evaluate", "--benchmarks", "demo-rain", "demo-noise", "--demo-cache", demo_dir,
            "--protocol", "paper", "full", "-o", out, "--no-progress", "--workers", "0", "--save-images"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "| Method | Deraining | Denoising |" in text and "| ours: identity |" in text
    assert "Table caption: paper protocol" in text and "Table caption: full protocol" in text
    for proto in ("paper", "full"):
        with open(os.path.join(out, proto, "summary.json")) as fh:
            summary = json.load(fh)
        assert summary["protocol"] == proto and set(summary["benchmarks"]) == {"demo-rain", "demo-noise"}
        with open(os.path.join(out, proto, "per_image.csv")) as fh:
            assert len(list(csv.DictReader(fh))) == 6
        assert os.path.isfile(os.path.join(out, proto, "results.md"))
    saved = Image.open(os.path.join(out, "full", "images", "demo-rain", "coffee_0.png"))
    assert saved.size == (48, 40)
    assert Image.open(os.path.join(out, "paper", "images", "demo-rain", "coffee_0.png")).size == (256, 256)
    assert main(args) == 2  # results there: refused ...
    assert "already has results" in capsys.readouterr().err
    full_only = ["evaluate", "--benchmarks", "demo-rain", "--demo-cache", demo_dir, "--protocol", "full",
                 "-o", os.path.join(out, "full"), "--no-progress", "--workers", "0"]
    assert main(full_only) == 2
    assert main(full_only + ["--overwrite"]) == 0  # ... unless --overwrite


def test_published_numbers_only_beside_their_preset(tmp_path):
    root = tmp_path / "data"
    rng = np.random.default_rng(0)
    for rel in ("test/Rain100L/input/1.png", "test/Rain100L/target/1.png", "test/Rain100L/input/2.png",
                "test/Rain100L/target/2.png", "LOLdataset/eval15/low/1.png", "LOLdataset/eval15/high/1.png"):
        os.makedirs(os.path.dirname(root / rel), exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)).save(root / rel)
    benches = [("rain100l", str(root)), ("lol", str(root))]
    paper = evaluate(identity_restorer(), benches, "paper", progress=False, log=None).markdown
    assert "VarFormer (CVPR 2025)" in paper and "| VarFormer | 31.33/0.913 |" in paper
    # two of Rain100L's 100 images, one of LOL's 15: marked in the cells, no Δ beside the published values
    assert "| Δ ours − VarFormer | – (partial) | – | – (partial) | – | same protocol |" in paper
    assert "(1/5 sets; 2/100 images)" in paper and "Deraining = mean over rain100l 2/100 images SHORT" in paper
    assert "AdaIR, five distinct" not in paper and "## Results: `identity`, protocol `paper`, fp32 on cpu" in paper
    full = evaluate(identity_restorer(), benches, "full", progress=False, log=None).markdown
    assert "31.33" not in full and "No published numbers were measured with protocol 'full'" in full
    airnet = evaluate(identity_restorer(), benches, "airnet", progress=False, log=None).markdown
    assert "AdaIR, five distinct degradations" in airnet and "PromptIR" in airnet
    # the VarFormer table holds one cell measured the airnet way (Restormer's low-light): only that one gets a Δ
    assert "| Δ ours − Restormer | (`restormer`) | (`restormer`) | – (partial) | (`restormer`) |" in airnet
    assert "Δ ours − VarFormer" not in airnet
    changed = with_metric_overrides(get_protocol("paper"), crop_border=0)
    assert changed.published_tag == "" and changed.name == "paper*"


def test_bad_restorer_and_protocol():
    with pytest.raises(WeightsNotFoundError, match="no/such/file.pt"):
        load_restorer("no/such/file.pt")
    with pytest.raises(ConfigError, match="unknown protocol"):
        get_protocol("paper2")


def test_demo_command_baseline_only_prints_baseline_table(demo_dir, capsys):
    rc = main(["demo", "--demo-cache", demo_dir, "--no-progress", "--baseline-only"])
    out, err = capsys.readouterr()
    assert rc == 0
    assert "| identity | paper |" in out and "| identity | full |" in out
    assert "no model was trained or evaluated" in err


def test_any_size_restorer_is_tiled_above_the_tile_size():
    shapes = []
    r = Restorer("any", lambda x: shapes.append(tuple(x.shape[-2:])) or x)
    x = torch.rand(1, 3, 40, 56)
    out = run_restorer(r, x, get_protocol("full"), overlap=8, tile=32)
    assert set(shapes) == {(32, 32)} and torch.allclose(out, x, atol=1e-6)
    shapes.clear()
    run_restorer(r, x, get_protocol("full"), tile=64)
    assert shapes == [(40, 56)]


def test_preset_metric_settings():
    restormer = get_protocol("restormer")
    assert restormer.metrics_for("rain", "rain100h").y_channel and restormer.pad_multiple == 8
    assert restormer.metrics_for("blur", "gopro").ssim_mode == "replicate"
    assert not restormer.metrics_for("blur", "gopro").y_channel
    diffuir = get_protocol("diffuir")
    assert diffuir.metrics_for("lowlight", "lol").ssim_mode == "replicate"
    assert diffuir.metrics_for("haze", "sots-outdoor").ssim_mode == "basicsr" and "sots-outdoor" in diffuir.gt_resize_benchmarks
    airnet = get_protocol("airnet")
    assert airnet.center_crop == 16 and airnet.noise_rule == "airnet" and not airnet.metrics.quantize
    assert get_protocol("restorevar").metrics.lpips and get_protocol("restorevar").resize == ("lanczos", 512)
    paper = get_protocol("paper")
    assert paper.resize == ("bilinear", 256) and paper.metrics.crop_border == 4 and not paper.metrics.y_channel
    # the authors' scripts: rounded Y and the one-channel rule where MATLAB measures uint8 images, SIDD in float,
    # RealBlur aligned, files read as their loaders read them
    rain = restormer.metrics_for("rain", "test100")
    assert rain.luma == "matlab_uint8" and rain.gray_skips_luma and rain.gt_reader == "matlab"
    assert diffuir.metrics_for("haze", "sots-outdoor").luma == "matlab_uint8"
    assert diffuir.metrics_for("lowlight", "lol").luma == "matlab"
    assert restormer.metrics_for("realnoise", "sidd-val").quantize is False
    assert restormer.metrics_for("blur", "realblur-r").measure == "realblur"
    assert restormer.metrics_for("blur", "gopro").measure == "standard"
    assert restormer.readers_for("rain", "rain100h") == {"noise_rule": "restormer", "lq_reader": "cv2",
                                                         "gt_reader": "matlab"}
    assert airnet.readers_for("noise", "cbsd68-s25")["lq_reader"] == "pil"
    assert paper.readers_for("rain", "rain100h") == {"noise_rule": "seeded", "lq_reader": "varformer",
                                                     "gt_reader": "varformer"}


def test_lpips_preset_without_weights_stops_before_work(demo_dir, tmp_path, monkeypatch):
    from varformer import metrics
    from varformer.errors import WeightsNotFoundError
    monkeypatch.setattr(metrics, "alexnet_search_paths", lambda: [tmp_path / "nowhere" / metrics.ALEXNET_FILE])
    out = tmp_path / "out"
    with pytest.raises(WeightsNotFoundError, match="alexnet"):
        evaluate(identity_restorer(), [("demo-rain", demo_dir)], "restorevar", output_dir=str(out),
                 progress=False, log=None)
    assert not out.exists()
