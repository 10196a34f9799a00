import json
import os

import pytest
import torch

from varformer.data.demo_set import DEMO_TASKS, DemoSpec, ensure_demo, verify_demo
from varformer.data.benchmark_data import benchmark_dataset
from varformer.data.roots import resolve_root
from varformer.data.train_sets import build_stage1_dataset, build_stage2_dataset, build_training_dataset
from varformer.errors import DataError

SMALL = DemoSpec(test_hw=(40, 48), train_hw=(40, 40), test_per_photo=1, train_per_photo=1)


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    return ensure_demo(str(tmp_path_factory.mktemp("cache") / "demo"), SMALL, log=None)


def test_demo_builds_deterministically_in_the_real_layout(demo_dir, tmp_path):
    with open(os.path.join(demo_dir, "manifest.json")) as fh:
        files = json.load(fh)["files"]
    # (input, target) x tasks x (3 test + 5 train photos), and the 5 clean training patches for stage 1
    assert len(files) == 2 * len(DEMO_TASKS) * (3 + 5) + 5
    assert sorted(os.listdir(os.path.join(demo_dir, "train", "clean")))[0] == "chelsea_0.png"
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
    with pytest.raises(DataError, match="unknown benchmark 'demo-snow'"):
        benchmark_dataset("demo-snow", demo_dir)


def test_demo_training_sets(demo_dir):
    train = os.path.join(demo_dir, "train")
    ds = build_stage2_dataset(train, DEMO_TASKS, crop_size=32, seed=0)
    s = ds[0]
    assert s["lq"].shape == (3, 32, 32) and s["task"] in DEMO_TASKS
    with pytest.raises(DataError, match="realnoise"):
        build_stage2_dataset(train, ["rain", "realnoise"])
    s1 = build_stage1_dataset(os.path.join(train, "clean"), crop_size=32, seed=0)
    assert len(s1) == 5 and torch.equal(s1[0]["lq"], s1[0]["gt"])
    s1d = build_stage1_dataset(os.path.join(train, "clean"), crop_size=32, seed=0, degrade_tasks=["rain", "blur"])
    out = s1d[3]
    assert out["task"] in ("rain", "blur") and not torch.equal(out["lq"], out["gt"])


def test_demo_set_is_a_named_data_root(demo_dir, monkeypatch):
    """``demo:train`` / ``demo:train/clean`` name the demo set's folders; training takes them like any root."""
    from varformer.config import load_config
    monkeypatch.setenv("VARFORMER_DEMO_CACHE", demo_dir)
    assert resolve_root("demo:train") == os.path.join(demo_dir, "train") and resolve_root("demo") == demo_dir
    with pytest.raises(DataError, match="no folder 'nope'"):
        resolve_root("demo:nope")
    cfg = load_config(overrides=["data.root=demo:train", "data.crop_size=32",
                                 "data.tasks=[rain,haze,blur,lowlight,noise]"]).data
    ds = build_training_dataset(cfg, stage=2, seed=0)
    assert len(ds.tasks) == 5 and ds[0]["lq"].shape == (3, 32, 32)
    cfg.root = "demo:train/clean"
    assert build_training_dataset(cfg, stage=1, seed=0)[0]["gt"].shape == (3, 32, 32)
    cfg.root, cfg.tasks = "demo:train", ["rain", "realnoise"]
    with pytest.raises(DataError, match="realnoise"):  # the demo set has no real-noise pairs
        build_training_dataset(cfg, stage=2, seed=0)
    assert benchmark_dataset("demo-rain").names() == ["astronaut_0", "coffee_0", "motorcycle_0"]  # default root


def test_data_check_on_the_demo_folder(tmp_path, capsys):
    from varformer.cli import main
    folder = ensure_demo(str(tmp_path / "d"), SMALL, log=None)
    assert main(["data", "check", folder]) == 0
    assert "demo-rain [rain] ok: 3 pairs (expected 3)" in capsys.readouterr().out
    with open(os.path.join(folder, "test", "blur", "target", "coffee_0.png"), "ab") as fh:
        fh.write(b"extra bytes")  # still decodes, but the checksum no longer matches
    assert main(["data", "check", folder]) == 1
    assert "corrupt file test/blur/target/coffee_0.png" in capsys.readouterr().out


def test_a_folder_that_is_not_a_demo_set_is_refused_not_emptied(tmp_path, monkeypatch, capsys):
    """``--demo-cache ~/Pictures`` (or ``VARFORMER_DEMO_CACHE``) used to be emptied for a rebuild."""
    from safety_utils import one_line, snapshot
    from varformer.cli import main
    from varformer.errors import OutputError
    pictures = tmp_path / "Pictures"
    pictures.mkdir()
    (pictures / "holiday.jpg").write_bytes(b"\xff\xd8 a photo")
    (pictures / "manifest.json").write_text('{"mine": true}')  # even a file of the manifest's name
    before = snapshot(tmp_path)
    with pytest.raises(OutputError, match="non-empty folder that varformer did not make"):
        ensure_demo(str(pictures), SMALL, log=None)
    monkeypatch.setenv("VARFORMER_DEMO_CACHE", str(pictures))
    assert main(["evaluate", "--benchmarks", "demo-rain", "--no-progress", "-o", str(tmp_path / "eval")]) == 2
    assert "VARFORMER_DEMO_CACHE" in one_line(capsys.readouterr().err)
    assert main(["demo", "--baseline-only", "--demo-cache", str(pictures), "--no-progress"]) == 2
    assert "Pictures is a non-empty folder" in one_line(capsys.readouterr().err)
    assert snapshot(tmp_path) == before


def test_a_marked_demo_set_or_an_earlier_build_is_rebuilt(tmp_path):
    from varformer.files import MARKER_NAME, folder_kind
    folder = ensure_demo(str(tmp_path / "d"), SMALL, log=None)
    assert folder_kind(folder) == "demo set"
    os.remove(os.path.join(folder, MARKER_NAME))  # as builds before the marker existed
    os.remove(os.path.join(folder, "test", "rain", "input", "coffee_0.png"))
    messages = []
    ensure_demo(folder, SMALL, log=messages.append)  # recognised by its manifest and folders alone
    assert verify_demo(folder, SMALL) is None and folder_kind(folder) == "demo set" and "rebuilding" in messages[0]
    assert not [n for n in os.listdir(tmp_path) if n != "d"]  # no build folder left beside it
