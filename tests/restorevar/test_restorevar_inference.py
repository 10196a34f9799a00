"""RestoreVAR through the project's commands: ``varformer convert restorevar`` (and back), ``load_restorer`` on
our RestoreVAR checkpoint, ``varformer evaluate --protocol restorevar`` and ``varformer restore`` (a small model at
512 px: VQVAE width 32, VAR depth 2, six scales up to 32x32)."""
import json
import os

import pytest
import torch
from restorevar_testutils import small_model

from varformer import metrics
from varformer.cli import main
from varformer.data.demo_set import DemoSpec, ensure_demo
from varformer.evaluation import get_protocol
from varformer.inference import load_restorer
from varformer.restorevar import load_restorevar, save_restorevar, to_official_restorevar

SPEC = DemoSpec(test_hw=(40, 48), train_hw=(40, 40), test_per_photo=1, train_per_photo=1)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("rv")
    m = small_model(patch_nums=(1, 2, 4, 8, 16, 32))
    off, vae = to_official_restorevar(m.state_dict(), m.settings())
    torch.save(off, folder / "restorevar.pth")
    torch.save(vae, folder / "vae_restorevar.ckpt")
    save_restorevar(folder / "restorevar.pt", m)
    return folder, m


def test_convert_both_ways_and_load_as_restorer(checkpoint, capsys):
    folder, m = checkpoint
    ours = folder / "converted.pt"
    assert main(["convert", "restorevar", str(folder / "restorevar.pth"), "--vae", str(folder / "vae_restorevar.ckpt"),
                 "-o", str(ours)]) == 0
    loaded = load_restorevar(ours)
    assert all(torch.equal(v, m.state_dict()[k]) for k, v in loaded.state_dict().items())
    assert main(["convert", "restorevar-to-official", str(ours), "-o", str(folder / "back")]) == 0
    back = torch.load(folder / "back" / "restorevar.pth", weights_only=True)
    original = torch.load(folder / "restorevar.pth", weights_only=True)
    assert back.keys() == original.keys() and all(torch.equal(back[k], original[k]) for k in back)
    r = load_restorer(str(ours), device="cpu")
    assert r.input_size == 512 and type(r.model).__name__ == "RestoreVAR"
    assert "every tensor placed" in capsys.readouterr().out


def test_evaluate_restorevar_protocol_and_restore(checkpoint, tmp_path, monkeypatch, capsys):
    folder, _ = checkpoint
    ours = folder / "restorevar.pt"
    torch.manual_seed(0)
    import torchvision
    alexnet = torchvision.models.alexnet(weights=None).state_dict()
    trunk = {k: v for k, v in alexnet.items() if k.startswith("features.")}
    torch.save(trunk, tmp_path / metrics.ALEXNET_FILE)
    monkeypatch.setattr(metrics, "alexnet_search_paths", lambda: [tmp_path / metrics.ALEXNET_FILE])
    demo = ensure_demo(str(tmp_path / "demo"), SPEC, log=None)
    out = tmp_path / "eval"
    assert main(["evaluate", "--weights", str(ours), "--benchmarks", "demo-rain", "--demo-cache", demo,
                 "--protocol", "restorevar", "-o", str(out), "--device", "cpu", "--batch-size", "3", "--workers", "0",
                 "--no-progress"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    b = summary["benchmarks"]["demo-rain"]
    assert summary["protocol"] == "restorevar" and summary["restorer"] == "restorevar.pt"
    assert b["images"] == 3 and "lpips" in b and "float" in b["metrics"]
    assert not get_protocol("restorevar").metrics.quantize          # RestoreVAR scores the float output

    restored = tmp_path / "restored"
    src = os.path.join(demo, "test", "rain", "input")
    one = sorted(os.listdir(src))[0]
    assert main(["restore", os.path.join(src, one), "-o", str(restored), "--weights", str(ours), "--device", "cpu",
                 "--no-progress"]) == 0
    from PIL import Image
    with Image.open(restored / (os.path.splitext(one)[0] + ".png")) as im:
        assert im.size == (48, 40)
    assert "1 written" in capsys.readouterr().out



def test_published_restorevar_table_beside_ours():
    from varformer.evaluation.report import published_tables
    summary = {"protocol": "restorevar", "published_tag": "restorevar", "restorer": "rv.pt",
               "benchmarks": {"lol": {"task": "lowlight", "psnr": 20.0, "ssim": 0.7, "lpips": 0.2}}}
    text = "\n".join(published_tables(summary))
    assert "| AutoDIR | 24.48/0.780/0.081 |" in text and "| InstructIR | 26.90/0.952/0.017 | – |" in text
    assert "| Δ ours − RestoreVAR | – | – | – | −1.72/−0.082/+0.074 | – |" in text
