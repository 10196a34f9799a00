"""``varformer reproduce paper`` offline on a fake Hugging Face cache: small random-init files under the real names
(a VQVAE of width 32, a depth-2 VAR and an official-layout VarFormer of that size) -> fetch -> convert (once) ->
evaluate on a miniature benchmark layout -> the paper's table with the published rows, deltas and missing sets."""
import json
import os

import numpy as np
import pytest
import torch
from huggingface_hub import constants as hf_constants
from PIL import Image

from varformer.cli import main
from varformer.errors import WeightsNotFoundError
from varformer.model import VarFormer, load_varformer, to_official
from varformer.reproduce import weights as W

REVISION = "0123456789abcdef0123456789abcdef01234567"


def _hub_file(hub: str, repo_id: str, filename: str, obj) -> None:
    """``models--ORG--NAME/snapshots/<rev>/FILE`` and ``refs/main``: the layout hf_hub_download reads offline."""
    repo = os.path.join(hub, "models--" + repo_id.replace("/", "--"))
    os.makedirs(os.path.join(repo, "snapshots", REVISION), exist_ok=True)
    os.makedirs(os.path.join(repo, "refs"), exist_ok=True)
    with open(os.path.join(repo, "refs", "main"), "w") as fh:
        fh.write(REVISION)
    torch.save(obj, os.path.join(repo, "snapshots", REVISION, filename))


def _pairs(folder: str, lq: str, gt: str, lq_name: str, gt_name: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    clean = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    noisy = np.clip(clean.astype(int) + rng.integers(-40, 41, clean.shape), 0, 255).astype(np.uint8)
    for sub, name, img in ((lq, lq_name, noisy), (gt, gt_name, clean)):
        os.makedirs(os.path.join(folder, sub), exist_ok=True)
        Image.fromarray(img).save(os.path.join(folder, sub, name))


@pytest.fixture(scope="module")
def fake_hub(tmp_path_factory):
    """The three released files, small, in a Hugging Face cache layout; the model they come from."""
    hub = str(tmp_path_factory.mktemp("hf") / "hub")
    torch.manual_seed(0)
    model = VarFormer(depth=2, vae_ch=32, n_cross=1).eval()
    _hub_file(hub, "FoundationVision/var", "vae_ch160v4096z32.pth", model.vae.state_dict())
    _hub_file(hub, "FoundationVision/var", "var_d16.pth", model.var.state_dict())
    official = to_official(model.state_dict())
    official["cross_attn_blocks.0.zero_k_bias"] = torch.zeros(model.var.C)   # inert, as in the released file
    _hub_file(hub, "wsy541/VarFormer", "net_g_last.pth", {"params": official, "params_ema": official})
    return hub, model


@pytest.fixture
def offline_env(fake_hub, tmp_path, monkeypatch):
    hub, _ = fake_hub
    monkeypatch.setenv("HF_HOME", os.path.dirname(hub))
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", hub)  # huggingface_hub read HF_HOME at its import
    monkeypatch.setenv("VARFORMER_CACHE", str(tmp_path / "cache"))
    empty = tmp_path / "checkpoints"
    empty.mkdir()
    return str(empty)


def test_fetch_convert_evaluate_table(fake_hub, offline_env, tmp_path, capsys, monkeypatch):
    _, model = fake_hub
    root = tmp_path / "data"
    _pairs(str(root / "test" / "Rain100H"), "input", "target", "1.png", "1.png", 1)
    _pairs(str(root / "Rain100L"), "rainy", "gt", "rain-1.png", "norain-1.png", 2)
    _pairs(str(root / "LOLdataset" / "eval15"), "low", "high", "1.png", "1.png", 3)
    _pairs(str(root / "SOTS" / "outdoor"), "hazy", "gt", "0001_0.8_0.2.jpg", "0001.png", 4)
    out = tmp_path / "out"
    rc = main(["reproduce", "paper", "--root", str(root), "--offline", "--checkpoints-dir", offline_env,
               "-o", str(out), "--quiet", "--workers", "0", "--device", "cpu"])
    captured = capsys.readouterr()
    text = captured.out
    assert rc == 0, captured.err
    # fetched from the fake cache, converted once, the backbone files checked against the checkpoint
    record = json.loads((out / "weights.json").read_text())
    assert record["converted_now"] and record["settings"]["depth"] == 2 and record["settings"]["vae_ch"] == 32
    assert all(os.path.dirname(p).endswith(REVISION) for p in record["files"].values())
    assert record["backbone"]["vqvae"]["differ"] == 0 and record["backbone"]["var_blocks"]["differ"] == 0
    converted = record["converted"]
    assert os.path.basename(converted) == W.file_sha256(record["files"]["net_g_last.pth"]) + ".safetensors"
    # the table: published rows, our row with partial columns marked, deltas, which sets each column averaged
    summary = json.loads((out / "paper" / "summary.json").read_text())["benchmarks"]
    assert set(summary) == {"rain100h", "rain100l", "lol", "sots-outdoor"}
    derain = (summary["rain100h"]["psnr"] + summary["rain100l"]["psnr"]) / 2
    assert "| Restormer | 33.96/0.935 |" in text and "| VarFormer | 31.33/0.913 |" in text
    assert f"{derain:.2f}/" in text and "(2/5 sets)" in text
    assert f"Δ ours − VarFormer | {derain - 31.33:+.2f}".replace("-", "−") in text
    assert "Deraining = mean over rain100h, rain100l (missing: test100, test1200, test2800)" in text
    assert "Deblurring = no set evaluated (missing: gopro)" in text
    assert (out / "main_table.md").read_text().strip() in text
    # the evaluated model is the released one, tensor for tensor
    ours = load_varformer(converted).state_dict()
    assert ours.keys() == model.state_dict().keys()
    assert all(torch.equal(ours[k], v) for k, v in model.state_dict().items())

    # a second run converts nothing: same file, taken from the cache
    def no_conversion(*a, **k):
        raise AssertionError("converted again")
    monkeypatch.setattr(W, "convert_official", no_conversion)
    files = W.fetch_paper_weights(offline=True, checkpoints_dir=offline_env, log=None)
    again = W.converted_checkpoint(files, log=None)
    assert not again.converted_now and str(again.path) == converted


def test_missing_files_are_named_in_one_message(tmp_path, monkeypatch):
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "empty_hub"))
    (tmp_path / "checkpoints").mkdir()
    with pytest.raises(WeightsNotFoundError) as e:
        W.fetch_paper_weights(offline=True, checkpoints_dir=str(tmp_path / "checkpoints"), log=None)
    msg = str(e.value)
    for name in ("vae_ch160v4096z32.pth", "var_d16.pth", "net_g_last.pth", "FoundationVision/var",
                 "wsy541/VarFormer", "hf download FoundationVision/var vae_ch160v4096z32.pth var_d16.pth",
                 "offline", str(tmp_path / "checkpoints")):
        assert name in msg


def test_no_benchmark_under_root_stops_before_any_download(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(W, "resolve_weight_file", lambda *a, **k: pytest.fail("fetched before checking the data"))
    (tmp_path / "empty").mkdir()
    assert main(["reproduce", "paper", "--root", str(tmp_path / "empty"), "--offline"]) == 2
    err = capsys.readouterr().err
    assert "none of the benchmarks needed" in err and "rain100h" in err and "Traceback" not in err


def test_table_rows_follow_the_protocol():
    from varformer.evaluation.report import paper_table
    benches = {"rain100h": {"psnr": 30.0, "ssim": 0.9}, "test1200": {"psnr": 32.0, "ssim": 0.92},
               "gopro": {"psnr": 29.0, "ssim": 0.88}}
    paper = paper_table({"protocol": "paper", "published_tag": "varformer-code", "restorer": "r",
                         "benchmarks": benches}, "varformer_paper_4task")
    text = "\n".join(paper)
    assert "| **ours: r** | 31.00/0.910 (2/5 sets) | 29.00/0.880 | missing | missing |" in text
    assert "| Δ ours − VarFormer | −0.33/−0.003 | −1.99/−0.076 | – | – |" in text
    full = "\n".join(paper_table({"protocol": "full", "published_tag": "", "restorer": "r", "benchmarks": benches},
                                 "varformer_paper_4task"))
    assert "Restormer" not in full and "Δ" not in full and "| **ours: r** | 31.00/0.910 (2/5 sets)" in full
    assert "measured with protocol `varformer-code` and are not shown" in full
