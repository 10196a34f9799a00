"""No-reference metrics and FID through pyiqa: names, the one-line checks before any work (pyiqa missing, weight
files missing, found where pyiqa looks), what each metric is given, FID as one value per set. pyiqa is replaced by
a fake module (``fake_pyiqa``); the one test with the real library uses a metric without weights and is skipped
where pyiqa is not installed (CI installs only ``.[test]``)."""
import csv
import json
import os
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from fake_pyiqa import SCALE, install_weights, make_fake_pyiqa
from varformer.cli import main
from varformer.errors import ConfigError, WeightsNotFoundError
from varformer.evaluation import check_protocol_needs, evaluate, get_protocol
from varformer.evaluation.iqa import IQA_METRICS, IqaScorer, check_iqa_metrics, check_metric_names
from varformer.inference import Restorer, identity_restorer


@pytest.fixture
def caches(tmp_path, monkeypatch):
    """Empty pyiqa / CLIP / Hugging Face caches of the test's own."""
    from huggingface_hub import constants
    torch_home, hf = tmp_path / "torch-home", tmp_path / "hf-hub"
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hf))
    return str(torch_home), str(hf)


@pytest.fixture
def fake(monkeypatch):
    mod = make_fake_pyiqa()
    monkeypatch.setitem(sys.modules, "pyiqa", mod)
    return mod


def _rain_set(root, names=("1.png", "2.png", "3.jpg"), hw=(24, 40)):
    rng = np.random.default_rng(0)
    for n in names:
        for sub in ("input", "target"):
            os.makedirs(root / "Rain100L" / sub, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, hw + (3,), dtype=np.uint8)).save(root / "Rain100L" / sub / n,
                                                                                 quality=95)
    return [("rain100l", str(root))]


def test_metric_names():
    assert check_metric_names(["PSNR", "musiq", "musiq", "fid"]) == ("psnr", "musiq", "fid")
    with pytest.raises(ConfigError, match="unknown metric.*brisk.*known: psnr, ssim, lpips, musiq"):
        check_metric_names(["psnr", "brisk"])
    assert {"musiq", "clipiqa", "maniqa", "niqe", "liqe", "qalign", "fid"} <= set(IQA_METRICS)
    assert IQA_METRICS["fid"].level == "set" and IQA_METRICS["niqe"].lower_better


def test_without_pyiqa_one_line_saying_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyiqa", None)  # import pyiqa -> ImportError
    assert check_iqa_metrics(["psnr", "ssim", "lpips"]) is None  # ours need no pyiqa
    with pytest.raises(ConfigError) as e:
        check_iqa_metrics(["psnr", "musiq", "clipiqa"])
    msg = str(e.value)
    assert "\n" not in msg and "musiq, clipiqa" in msg and 'pip install -e ".[nr]"' in msg and "pyiqa>=0.1.13" in msg


def test_missing_weight_file_named_in_one_line(fake, caches):
    torch_home, hf = caches
    with pytest.raises(WeightsNotFoundError) as e:
        check_iqa_metrics(["musiq", "clipiqa"])
    msg = str(e.value)
    where = os.path.join(torch_home, "hub", "pyiqa", "musiq_koniq_ckpt-e95806b9.pth")
    assert "\n" not in msg and msg.startswith("metric musiq needs musiq_koniq_ckpt-e95806b9.pth") and where in msg
    assert "huggingface.co/chaofengc/IQA-PyTorch-Weights/resolve/main/musiq_koniq_ckpt-e95806b9.pth" in msg
    assert "1 more missing (clipiqa)" in msg
    install_weights(torch_home, hf, ["musiq"])
    with pytest.raises(WeightsNotFoundError, match=r"clipiqa needs RN50\.pt: download https://openaipublic\S+/RN50"
                                                   r"\.pt to \S+/hub/clip/RN50\.pt"):
        check_iqa_metrics(["musiq", "clipiqa"])
    # MANIQA builds timm's ViT first: its Hugging Face repo must be in the hub cache too
    install_weights(torch_home, hf, ["clipiqa"])
    os.makedirs(os.path.join(torch_home, "hub", "pyiqa"), exist_ok=True)
    open(os.path.join(torch_home, "hub", "pyiqa", "ckpt_koniq10k.pt"), "w").close()
    with pytest.raises(WeightsNotFoundError, match="timm/vit_base_patch8_224.augreg2_in21k_ft_in1k.*"
                                                   "huggingface-cli download"):
        check_iqa_metrics(["maniqa"])
    install_weights(torch_home, hf, list(IQA_METRICS))
    assert check_iqa_metrics(list(IQA_METRICS)) is fake


def test_cli_stops_before_any_restoration(fake, caches, tmp_path, monkeypatch, capsys):
    import varformer.inference as inference
    monkeypatch.setattr(inference, "load_restorer", lambda *a, **k: pytest.fail("model loaded before the check"))
    _rain_set(tmp_path / "data")
    args = ["evaluate", "--benchmarks", "rain100l", "--root", str(tmp_path / "data"), "--protocol", "full",
            "--metrics", "psnr", "musiq", "-o", str(tmp_path / "out"), "--no-progress", "--workers", "0"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "musiq_koniq_ckpt-e95806b9.pth" in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not os.path.exists(tmp_path / "out" / "per_image.csv")
    with pytest.raises(WeightsNotFoundError):  # the API checks the same way
        check_protocol_needs(get_protocol("restorevar"), ["clipiqa"])


def test_no_reference_metrics_read_the_stored_8bit_image(fake, caches, tmp_path):
    install_weights(*caches, ["musiq", "clipiqa", "niqe"])
    benches = _rain_set(tmp_path / "data")
    darker = Restorer("darker", lambda x: x * 0.9 + 0.013)  # float outputs, not on the 8-bit grid
    res = evaluate(darker, benches, "full", metrics=["psnr", "musiq", "clipiqa", "niqe"],
                   output_dir=str(tmp_path / "out"), progress=False, log=None)
    seen = fake.created["musiq"].seen
    assert len(seen) == 3 and all(s.shape[0] == 1 for s in seen)  # one image per call
    for row, x in zip(res.rows, seen):
        # the full protocol's saving rule: round to 8 bits, as a PNG written by --save-images
        assert torch.equal(x * 255, (x * 255).round())
        assert row["musiq"] == pytest.approx(float(x.mean()) * SCALE["musiq"], rel=1e-6)
        assert row["niqe"] == pytest.approx(float(x.mean()) * SCALE["niqe"], rel=1e-6)
        assert "ssim" not in row and row["psnr"] > 0
    b = res.summary["benchmarks"]["rain100l"]
    assert b["clipiqa"] == pytest.approx(np.mean([r["clipiqa"] for r in res.rows]))
    assert "pyiqa 0.1.13" in b["metrics"] and "ssim" not in b
    with open(tmp_path / "out" / "per_image.csv") as fh:
        header = next(csv.reader(fh))
    assert header == ["benchmark", "task", "name", "height", "width", "psnr", "musiq", "clipiqa", "niqe"]
    assert "| MUSIQ | CLIP-IQA | NIQE |" in res.markdown and "no-reference metrics: pyiqa 0.1.13" in res.markdown


def test_fid_is_one_value_per_benchmark(fake, caches, tmp_path):
    install_weights(*caches, ["fid"])
    benches = _rain_set(tmp_path / "data")
    res = evaluate(identity_restorer(), benches, "full", metrics=["psnr", "fid"], output_dir=str(tmp_path / "out"),
                   progress=False, log=None)
    restored, reference, kwargs = fake.created["fid"].seen[0]
    assert len(restored) == len(reference) == 3 and kwargs == {"num_workers": 0, "verbose": False}
    assert all("fid" not in r for r in res.rows)
    # identity: the restored folder holds the inputs, the reference folder the targets (both 8-bit PNGs)
    root = tmp_path / "data" / "Rain100L"
    lq, gt = [np.mean([np.asarray(Image.open(root / sub / n), dtype=np.float64).mean() for n in os.listdir(root / sub)])
              for sub in ("input", "target")]
    assert res.summary["benchmarks"]["rain100l"]["fid"] == pytest.approx(abs(lq - gt))
    with open(tmp_path / "out" / "summary.json") as fh:
        assert json.load(fh)["benchmarks"]["rain100l"]["fid"] == pytest.approx(abs(lq - gt))
    one = evaluate(identity_restorer(), _rain_set(tmp_path / "one", ("1.png",)), "full", metrics=["fid"],
                   progress=False, log=None)
    b = one.summary["benchmarks"]["rain100l"]
    assert b["fid"] is None and any("at least two images" in n for n in b["notes"])
    assert "| FID |" in one.markdown  # the per-benchmark table has the column


def test_pyiqa_version_differing_from_the_papers_is_noted(monkeypatch, caches, tmp_path):
    monkeypatch.setitem(sys.modules, "pyiqa", make_fake_pyiqa("0.1.16"))
    install_weights(*caches, ["musiq"])
    scorer = IqaScorer(["psnr", "musiq"], "cpu")
    assert scorer.names == ("musiq",) and scorer.version == "0.1.16" and scorer.lower_better == {"musiq": False}
    res = evaluate(identity_restorer(), _rain_set(tmp_path / "data", ("1.png",), hw=(16, 16)), "restorevar",
                   metrics=["musiq"], progress=False, log=None)
    assert any("pyiqa 0.1.16 here, 0.1.13 in the paper's environment" in n for n in res.summary["run_notes"])


def test_real_pyiqa_metric_without_weights():
    pyiqa = pytest.importorskip("pyiqa")
    x = torch.rand(2, 3, 64, 80, generator=torch.Generator().manual_seed(0))
    scorer = IqaScorer(["piqe"], "cpu")
    direct = pyiqa.create_metric("piqe", device=torch.device("cpu"), as_loss=False)
    assert scorer.lower_better["piqe"] is True
    assert scorer.per_image(x)["piqe"] == pytest.approx([float(direct(x[i:i + 1])) for i in range(2)])
