"""``varformer reproduce paper`` offline on a fake Hugging Face cache: small random-init files under the real names
(a VQVAE of width 32, a depth-2 VAR and an official-layout VarFormer of that size) -> fetch -> convert (once) ->
evaluate on a miniature benchmark layout -> the paper's table with the published rows (each with its protocol),
short and missing sets marked, no Δ beside an incomplete column; the dry run, the partial run, the precision."""
import dataclasses
import json
import os

import numpy as np
import pytest
import torch
from huggingface_hub import constants as hf_constants
from PIL import Image

from varformer.cli import main
from varformer.errors import WeightsNotFoundError
from varformer.methods import registry
from varformer.model import VarFormer, load_varformer, to_official
from varformer.reproduce import weights as W

SPEC = registry.get(registry.DEFAULT)

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
               "-o", str(out), "--no-progress", "--workers", "0", "--device", "cpu"])
    captured = capsys.readouterr()
    text = captured.out
    assert rc == 0, captured.err
    # fetched from the fake cache, converted once, the backbone files checked against the checkpoint
    record = json.loads((out / "weights.json").read_text())
    assert record["converted_now"] and record["settings"]["depth"] == 2 and record["settings"]["vae_ch"] == 32
    assert record["method"] == SPEC.name
    assert all(os.path.dirname(p).endswith(REVISION) for p in record["files"].values())
    assert record["backbone"]["vqvae"]["differ"] == 0 and record["backbone"]["var_blocks"]["differ"] == 0
    converted = record["converted"]
    assert os.path.basename(converted) == W.file_sha256(record["files"]["net_g_last.pth"]) + ".safetensors"
    # the table: published rows with their protocols, our row with short and partial columns marked, no Δ beside
    # an incomplete column, which sets (and how many of their images) each column averaged
    summary = json.loads((out / "paper" / "summary.json").read_text())["benchmarks"]
    assert set(summary) == {"rain100h", "rain100l", "lol", "sots-outdoor"}
    derain = (summary["rain100h"]["psnr"] + summary["rain100l"]["psnr"]) / 2
    assert "| Restormer | 33.96/0.935 | 32.92/0.961 | 20.41/0.806 | 30.87/0.969 | `restormer` (Low-light: `airnet`) |" \
        in text
    assert "| VarFormer | 31.33/0.913 | 30.99/0.956 | 25.13/0.917 | 32.96/0.956 | `varformer-code` |" in text
    assert f"{derain:.2f}/" in text and "(2/5 sets; 2/200 images)" in text and "(1/15 images)" in text
    assert "| Δ ours − VarFormer | – (partial) | – | – (partial) | – (partial) | same protocol |" in text
    assert "| `paper`, fp32 |" in text and "## Protocol `paper`, fp32" in text
    assert ("Deraining = mean over rain100h 1/100 images SHORT, rain100l 1/100 images SHORT (missing: test100, "
            "test1200, test2800)") in text
    assert "Deblurring = no set evaluated (missing: gopro)" in text
    assert "INCOMPLETE: missing test100, test1200, test2800, gopro; short rain100h, rain100l, lol, sots-outdoor" \
        in text and "every set the table needs" not in text
    assert (out / "main_table.md").read_text().strip() in text
    # the evaluated model is the released one, tensor for tensor
    ours = load_varformer(converted).state_dict()
    assert ours.keys() == model.state_dict().keys()
    assert all(torch.equal(ours[k], v) for k, v in model.state_dict().items())

    # a quick, labelled partial run (the first image of each set) converts nothing: the cached file is used
    import varformer.model.paper as method_paper

    def no_conversion(*a, **k):
        raise AssertionError("converted again")
    monkeypatch.setattr(method_paper, "convert_official", no_conversion)
    _pairs(str(root / "test" / "Rain100H"), "input", "target", "2.png", "2.png", 5)
    assert main(["reproduce", "paper", "--root", str(root), "--offline", "--checkpoints-dir", offline_env,
                 "-o", str(tmp_path / "quick"), "--no-progress", "--workers", "0", "--device", "cpu",
                 "--max-images", "1"]) == 0
    text = capsys.readouterr().out
    assert "converted model file (cached" in text and "**PARTIAL TABLE: at most 1 images per set" in text
    quick = json.loads((tmp_path / "quick" / "paper" / "summary.json").read_text())
    assert quick["max_images"] == 1 and quick["benchmarks"]["rain100h"]["images"] == 1
    assert quick["benchmarks"]["rain100h"]["limited_to"] == 1 and quick["precision"] == "fp32"
    assert "Δ ours − VarFormer | – (partial) | – | – (partial) | – (partial)" in text


def test_missing_files_are_named_in_one_message(tmp_path, monkeypatch):
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "empty_hub"))
    folder = str(tmp_path / "mine")
    os.makedirs(folder)
    with pytest.raises(WeightsNotFoundError) as e:
        W.fetch_released(SPEC.paper, offline=True, checkpoints_dir=folder, log=None)
    msg = str(e.value)
    for name in ("vae_ch160v4096z32.pth", "var_d16.pth", "net_g_last.pth", "FoundationVision/var",
                 "wsy541/VarFormer", "hf download FoundationVision/var vae_ch160v4096z32.pth var_d16.pth",
                 f"--local-dir {folder}`", f"put the files in {folder}/", "offline"):
        assert name in msg
    assert "--local-dir checkpoints" not in msg


def test_cached_conversion_is_reused(fake_hub, offline_env):
    files = W.fetch_released(SPEC.paper, offline=True, checkpoints_dir=offline_env, log=None)
    first = W.converted_checkpoint(SPEC, files, log=None)

    def no_conversion(files):
        raise AssertionError("converted again")
    again = W.converted_checkpoint(dataclasses.replace(SPEC, paper=dataclasses.replace(SPEC.paper,
                                                                                       convert=no_conversion)),
                                   files, log=None)
    assert not again.converted_now and again.path == first.path and again.record == first.record


def test_no_benchmark_under_root_stops_before_any_download(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(W, "resolve_weight_file", lambda *a, **k: pytest.fail("fetched before checking the data"))
    (tmp_path / "empty").mkdir()
    assert main(["reproduce", "paper", "--root", str(tmp_path / "empty"), "--offline"]) == 2
    err = capsys.readouterr().err
    assert "none of the benchmarks needed" in err and "rain100h" in err and "Traceback" not in err


def _bench(psnr, ssim, images, expected, task="rain"):
    return {"task": task, "psnr": psnr, "ssim": ssim, "images": images, "expected": expected}


def test_table_deltas_only_between_rows_measured_alike_and_complete_columns():
    from varformer.evaluation.report import paper_table
    derain = {n: _bench(31.0, 0.91, e, e) for n, e in (("rain100h", 100), ("rain100l", 100), ("test100", 100),
                                                         ("test1200", 1200), ("test2800", 2800))}
    benches = {**derain, "gopro": _bench(29.0, 0.88, 1111, 1111, "blur"), "lol": _bench(20.0, 0.8, 3, 15, "lowlight")}

    def table(protocol, tag):
        return "\n".join(paper_table({"protocol": protocol, "published_tag": tag, "restorer": "r", "precision": "fp32",
                                      "benchmarks": benches}, "varformer_paper_4task"))
    paper = table("paper", "varformer-code")
    # complete columns get a Δ against the row measured as ours; the short one is marked and gets none
    assert "| **ours: r** | 31.00/0.910 | 29.00/0.880 | 20.00/0.800 (3/15 images) | missing | `paper`, fp32 |" in paper
    assert "| Δ ours − VarFormer | −0.33/−0.003 | −1.99/−0.076 | – (partial) | – | same protocol |" \
        in paper
    assert "Δ ours − Restormer" not in paper and "Δ ours − DiffUIR" not in paper
    assert "| AirNet | 25.44/0.743 |" in paper and "not stated (AirNet's paper" in paper
    assert "Low-light = mean over lol 3/15 images SHORT" in paper and "gopro 1111/1111 images;" in paper
    # measured as Restormer's own evaluation: the Δ against its row, its low-light cell naming its other protocol
    restormer = table("restormer", "restormer")
    assert "| Δ ours − Restormer | −2.96/−0.025 | −3.92/−0.081 | (`airnet`) | – | same protocol |" \
        in restormer
    assert "Δ ours − VarFormer" not in restormer
    # no published row measured with `full`: none shown beside it
    full = table("full", "")
    assert "Restormer" not in full and "Δ ours" not in full and "| **ours: r** | 31.00/0.910 |" in full
    assert "No published row was measured with this protocol" in full
