import json
import os

import pytest
import torch

from varformer.data.demo import DEMO_TASKS, DemoSpec, ensure_demo, verify_demo
from varformer.data.test_sets import benchmark_dataset
from varformer.data.training import build_demo_stage1_dataset, build_demo_stage2_dataset
from varformer.errors import DataError

SMALL = DemoSpec(test_hw=(40, 48), train_hw=(40, 40), test_per_photo=1, train_per_photo=1)


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    return ensure_demo(str(tmp_path_factory.mktemp("cache") / "demo"), SMALL, log=None)


def test_demo_builds_deterministically_in_the_real_layout(demo_dir, tmp_path):
    with open(os.path.join(demo_dir, "manifest.json")) as fh:
        files = json.load(fh)["files"]
    assert len(files) == 2 * len(DEMO_TASKS) * (3 + 5)  # (input, target) x tasks x (3 test + 5 train photos)
    for task in DEMO_TASKS:
        assert sorted(os.listdir(os.path.join(demo_dir, "test", task))) == ["input", "target"]
    test_photos = {f.split("/")[-1].rsplit("_", 1)[0] for f in files if f.startswith("test/")}
    train_photos = {f.split("/")[-1].rsplit("_", 1)[0] for f in files if f.startswith("train/")}
    assert not test_photos & train_photos
    again = ensure_demo(str(tmp_path / "again"), SMALL, log=None)
    with open(os.path.join(again, "manifest.json")) as fh:
        assert json.load(fh)["files"] == files  # same bytes on a second build


def test_demo_rebuilds_when_corrupt(tmp_path):
    folder = ensure_demo(str(tmp_path / "d"), SMALL, log=None)
    victim = os.path.join(folder, "test", "rain", "input", "coffee_0.png")
    original = open(victim, "rb").read()
    with open(victim, "wb") as fh:
        fh.write(b"garbage")
    assert "corrupt" in verify_demo(folder)
    messages = []
    ensure_demo(folder, SMALL, log=messages.append)
    assert open(victim, "rb").read() == original and "rebuilding" in messages[0]


def test_demo_reads_like_a_benchmark(demo_dir):
    ds = benchmark_dataset("demo-haze", demo_dir)
    assert len(ds) == 3 and ds.names() == ["astronaut_0", "coffee_0", "motorcycle_0"]
    item = ds[0]
    assert item["lq"].shape == item["gt"].shape == (3, 40, 48)
    assert (item["lq"] - item["gt"]).abs().mean() > 0.02  # actually degraded
    with pytest.raises(DataError, match="unknown demo benchmark"):
        benchmark_dataset("demo-snow", demo_dir)


def test_demo_training_sets(demo_dir):
    ds = build_demo_stage2_dataset(demo_dir, crop_size=32, seed=0)
    s = ds[0]
    assert s["lq"].shape == (3, 32, 32) and s["task"] in DEMO_TASKS
    with pytest.raises(DataError, match="realnoise"):
        build_demo_stage2_dataset(demo_dir, tasks=["rain", "realnoise"])
    s1 = build_demo_stage1_dataset(demo_dir, crop_size=32, seed=0)
    assert torch.equal(s1[0]["lq"], s1[0]["gt"])
    s1d = build_demo_stage1_dataset(demo_dir, crop_size=32, seed=0, degrade_tasks=["rain", "blur"])
    out = s1d[3]
    assert out["task"] in ("rain", "blur") and not torch.equal(out["lq"], out["gt"])


def test_training_dataset_from_config(demo_dir):
    from varformer.config import load_config
    from varformer.data.training import build_training_dataset
    cfg = load_config(overrides=["data.demo=true", f"data.demo_cache={demo_dir}", "data.crop_size=32"]).data
    messages = []
    ds = build_training_dataset(cfg, stage=2, seed=0, log=messages.append)
    assert "realnoise" in messages[0] and "realnoise" not in ds.tasks and len(ds.tasks) == 5
    assert ds[0]["lq"].shape == (3, 32, 32)
    assert build_training_dataset(cfg, stage=1, seed=0)[0]["gt"].shape == (3, 32, 32)


def test_data_check_on_the_demo_folder(tmp_path, capsys):
    from varformer.cli import main
    folder = ensure_demo(str(tmp_path / "d"), SMALL, log=None)
    assert main(["data", "check", folder]) == 0
    assert "demo-rain [rain] ok: 3 pairs (expected 3)" in capsys.readouterr().out
    with open(os.path.join(folder, "test", "blur", "target", "coffee_0.png"), "ab") as fh:
        fh.write(b"extra bytes")  # still decodes, but the checksum no longer matches
    assert main(["data", "check", folder]) == 1
    assert "corrupt file test/blur/target/coffee_0.png" in capsys.readouterr().out
