"""RestoreVAR's Table 1 and Table 2 from the authors' JSON lists: the preset's rules (cap, fp32, no-reference
settings), Table 1's numbers and the published rows beside them, Table 2's stored-image pipeline against a
literal file-by-file translation of the release's saving steps, and the precision rule."""
import json
import os
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from fake_pyiqa import SCALE, install_weights, make_fake_pyiqa
from varformer import metrics as M
from varformer.cli import main
from varformer.data.resize import resize_lanczos_pil
from varformer.evaluation import evaluate, get_protocol
from varformer.evaluation.evaluate import run_precision
from varformer.inference import Restorer, identity_restorer


def _pair(root, lq, gt, hw_lq, hw_gt, seed):
    rng = np.random.default_rng(seed)
    for rel, hw in ((lq, hw_lq), (gt, hw_gt)):
        os.makedirs(os.path.dirname(root / rel), exist_ok=True)
        Image.fromarray(rng.integers(0, 256, hw + (3,), dtype=np.uint8)).save(root / rel, quality=95)


def _list(root, name, rows):
    """rows: (dataset, degradation, lq file, gt file, lq size, gt size)."""
    entries = []
    for i, (ds, deg, lq, gt, hw_lq, hw_gt) in enumerate(rows):
        lq, gt = f"data/{ds}/Test/in/{lq}", f"data/{ds}/Test/GT/{gt}"
        _pair(root, lq, gt, hw_lq, hw_gt, seed=i)
        entries.append({"image_path": lq, "target_path": gt, "degradation": deg, "dataset": ds})
    path = root / name
    path.write_text(json.dumps(entries))
    return str(path)


@pytest.fixture
def random_alexnet(tmp_path, monkeypatch):
    import torchvision
    net = torchvision.models.alexnet(weights=None)
    trunk = {k: v for k, v in net.state_dict().items() if k.startswith("features.")}
    torch.save(trunk, tmp_path / M.ALEXNET_FILE)
    monkeypatch.setattr(M, "alexnet_search_paths", lambda: [tmp_path / M.ALEXNET_FILE])


def test_preset_records_the_papers_settings():
    p = get_protocol("restorevar")
    assert p.list_cap == 5001 and p.precision == "fp32" and p.resize == ("lanczos", 512)
    assert p.nr.pyiqa_version == "0.1.13" and p.nr.metrics == ("musiq", "clipiqa") and p.nr.colour == "RGB"
    rule = p.nr.saving
    assert (rule.to_uint8, rule.grid3, rule.jpeg_first, rule.jpeg_again) == ("floor", True, 75, 95)
    assert rule.qualities("a.png", "cdd") == (95, 95) and rule.qualities("a.JPG", "lhp") == (75, 95)
    assert rule.qualities("a.png", "toled") == (None, None)
    assert get_protocol("paper").list_cap is None and get_protocol("paper").precision == "fp32"   # as the official test


def test_table1_from_the_authors_lists(tmp_path, random_alexnet):
    path = _list(tmp_path, "RESIDE.json", [("RESIDE", "Haze", "1_0.8_0.2.jpg", "1.jpg", (40, 56), (44, 60)),
                                           ("RESIDE", "Haze", "2_0.8_0.2.jpg", "2.jpg", (40, 56), (40, 56))])
    path2 = _list(tmp_path, "LOLv1.json", [("LOLv1", "Low-light", "7.png", "7.png", (30, 30), (30, 30))])
    res = evaluate(identity_restorer(), [], "restorevar", lists=[path, path2], list_root=str(tmp_path),
                   progress=False, log=None)
    b = res.summary["benchmarks"]
    assert set(b) == {"reside", "lolv1"} and b["reside"]["images"] == 2 and b["reside"]["task"] == "haze"
    # our numbers are the metrics of the 512x512 Lanczos pairs on float values (LQ and GT sizes may differ)
    lq = resize_lanczos_pil(torch.from_numpy(np.asarray(Image.open(tmp_path / "data/RESIDE/Test/in/1_0.8_0.2.jpg"),
                                                        dtype=np.float32) / 255).permute(2, 0, 1), 512)[None]
    gt = resize_lanczos_pil(torch.from_numpy(np.asarray(Image.open(tmp_path / "data/RESIDE/Test/GT/1.jpg"),
                                                        dtype=np.float32) / 255).permute(2, 0, 1), 512)[None]
    row = res.rows[0]
    assert row["psnr"] == pytest.approx(float(M.psnr(lq, gt, quantize=False)[0]))
    assert row["ssim"] == pytest.approx(float(M.ssim(lq, gt, quantize=False, ssim_mode="skimage_default")[0]))
    md = res.markdown
    assert "Table 1 (PSNR / SSIM / LPIPS)" in md and "| AutoDIR | 24.48/0.780/0.081 |" in md
    r = b["reside"]
    delta = f"{r['psnr'] - 24.67:+.2f}/{r['ssim'] - 0.821:+.3f}/{r['lpips'] - 0.074:+.3f}".replace("-", "−")
    assert f"| Δ ours − RestoreVAR | {delta} | – | – |" in md
    assert "RESIDE = mean over reside 2/2 images; Snow100k = no set evaluated" in md and "lolv1 1/1 images" in md


def _literal_stored(lq, out, gt, file, forced_jpeg, tmp):
    """The release's saving steps, file by file: the [input | restored | GT] grid floored to 8 bits and saved by
    PIL from the name (.jpg: JPEG, PIL's default quality 75; CDD/LOLBlur: JPEG quality 95); the middle panel cut
    out and saved again with the same extension (OpenCV's default JPEG quality 95: Pillow here, which gives the
    same pixels, docs/evaluation.md); read back as pyiqa reads (PIL, RGB)."""
    grid = np.concatenate([np.floor(x.permute(1, 2, 0).numpy() * 255).astype(np.uint8) for x in (lq, out, gt)], 1)
    first = os.path.join(tmp, "grid_" + (os.path.splitext(file)[0] + ".jpg" if forced_jpeg else file))
    Image.fromarray(grid).save(first, **({"quality": 95} if forced_jpeg else {}))
    cut = Image.open(first).convert("RGB").crop((512, 0, 1024, 512))
    second = os.path.join(tmp, "split_" + os.path.basename(first))
    cut.save(second, **({"quality": 95} if second.lower().endswith(".jpg") else {}))
    return np.asarray(Image.open(second).convert("RGB"))


def test_table2_scores_the_image_as_the_release_stores_it(tmp_path, monkeypatch):
    from huggingface_hub import constants
    fake = make_fake_pyiqa()
    monkeypatch.setitem(sys.modules, "pyiqa", fake)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    install_weights(str(tmp_path / "th"), str(tmp_path / "hf"), ["musiq", "clipiqa"])
    rows = [("LHP", "Rain", "r1.jpg", "r1.jpg", (36, 44), (36, 44)),
            ("LHP", "Rain", "r2.png", "r2.png", (36, 44), (36, 44)),
            ("CDD", "Mixed", "c1.png", "c1.png", (32, 32), (32, 32)),
            ("TOLED", "toled", "t1.png", "t1.png", (30, 40), (30, 40))]
    path = _list(tmp_path, "gen.json", rows)
    soft = Restorer("soft", lambda x: x * 0.9 + 0.013)  # float outputs off the 8-bit grid
    res = evaluate(soft, [], "restorevar", lists=[path], list_root=str(tmp_path), metrics=["musiq", "clipiqa"],
                   progress=False, log=None)
    seen = fake.created["musiq"].seen
    assert len(seen) == 4 and all(s.shape == (1, 3, 512, 512) for s in seen)
    for (ds, _, lq_name, gt_name, _, _), x in zip(rows, seen):
        prep = [resize_lanczos_pil(torch.from_numpy(np.asarray(Image.open(tmp_path / f"data/{ds}/Test/{d}/{n}"),
                                                                dtype=np.float32) / 255).permute(2, 0, 1), 512)
                for d, n in (("in", lq_name), ("GT", gt_name))]
        out = (prep[0] * 0.9 + 0.013).clamp(0, 1)
        expect = _literal_stored(prep[0], out, prep[1], lq_name, ds == "CDD", str(tmp_path))
        got = (x[0] * 255).round().byte().permute(1, 2, 0).numpy()
        assert np.array_equal(got, expect), lq_name
        if ds != "CDD" and lq_name.endswith(".png"):  # stored losslessly: exactly the floored output
            assert np.array_equal(got, np.floor(out.permute(1, 2, 0).numpy() * 255).astype(np.uint8))
    b = res.summary["benchmarks"]
    assert set(b) == {"lhp", "cdd", "toled"} and "psnr" not in b["lhp"]
    assert b["lhp"]["musiq"] == pytest.approx(np.mean([float(s.mean()) * SCALE["musiq"] for s in seen[:2]]), rel=1e-6)
    md = res.markdown
    assert "Table 2: generalisation" in md and "| RestoreVAR | 57.662/0.414 | 63.607/0.429 |" in md
    lhp, toled = b["lhp"], b["toled"]
    ours_avg = f"{(lhp['musiq'] + toled['musiq']) / 2:.3f}/{(lhp['clipiqa'] + toled['clipiqa']) / 2:.3f} (2/5 sets)"
    assert f"| **ours: soft** | {lhp['musiq']:.3f}/{lhp['clipiqa']:.3f} | – | – | " in md and ours_avg in md
    d = f"{lhp['musiq'] - 57.662:+.3f}/{lhp['clipiqa'] - 0.414:+.3f}".replace("-", "−")
    assert f"| Δ ours − RestoreVAR | {d} | – | – |" in md
    assert "Table 1" not in md  # no PSNR/SSIM/LPIPS measured: nothing to put beside Table 1


def test_auto_precision_never_changes_a_published_protocol(tmp_path, monkeypatch):
    rv, paper = get_protocol("restorevar"), get_protocol("paper")
    assert run_precision(None, "auto", rv) == "fp32" and run_precision("auto", "auto", rv) == "fp32"
    assert run_precision("bf16", "auto", rv) == "bf16" and run_precision(None, "bf16", rv) == "bf16"
    assert run_precision(None, "auto", paper) == "fp32" and run_precision(None, "auto", get_protocol("full")) == "auto"
    import varformer.inference as inference
    asked = []
    monkeypatch.setattr(inference, "load_restorer", lambda spec, device, precision: asked.append(precision)
                        or identity_restorer())
    path = _list(tmp_path, "LOLv1.json", [("LOLv1", "Low-light", "7.png", "7.png", (30, 30), (30, 30))])
    base = ["evaluate", "--list", path, "--root", str(tmp_path), "--metrics", "psnr", "ssim", "--no-progress",
            "--workers", "0", "--protocol", "restorevar", "paper", "full"]
    assert main(base + ["-o", str(tmp_path / "a")]) == 0
    assert asked == ["fp32", "auto"]  # restorevar and paper record fp32 (one model for both); full does not
    assert main(base + ["-o", str(tmp_path / "b"), "--precision", "bf16"]) == 0
    assert asked[2:] == ["bf16"]  # one model for every protocol
    bf16 = Restorer("r", lambda x: x, precision="bf16")
    res = evaluate(bf16, [], rv, lists=[path], list_root=str(tmp_path), metrics=["psnr"], progress=False, log=None)
    assert res.summary["precision"] == "bf16"
    assert "preset restorevar evaluates in fp32 (its paper's setting); this run used bf16" in res.markdown
