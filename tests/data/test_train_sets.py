import numpy as np
import pytest
import torch

from data_helpers import write_rgb
from varformer.data.train_sets import (build_stage1_dataset, build_stage2_dataset,
                                     paired_random_crop)
from varformer.errors import DataError


def _official_root(tmp_path, size=(40, 48)):
    """Miniature of the official stage-2 layout: GT = LQ + 0.25 (so crops can be checked for pairing)."""
    import os
    from PIL import Image
    r = tmp_path / "train"
    specs = {
        "blur": ("GoPro/train/input", "GoPro/train/groundtruth", ["GOPR0372_07_00-000047.png"] * 2),
        "lowlight": ("LOLdataset/our485/low", "LOLdataset/our485/high", ["2.png"] * 2),
        "rain": ("rain13k/train/input", "rain13k/train/target", ["3328.jpg", "3328.png"]),
        "haze": ("RESIDE2/OTS_ALPHA2/haze/OTS", "RESIDE2/OTS_ALPHA2/clear/clear_images", ["0025_0.8_0.04.png", "0025.png"]),
    }
    rng = np.random.default_rng(0)
    for task, (lq_d, gt_d, (lq_n, gt_n)) in specs.items():
        base = rng.integers(0, 180, (*size, 3), dtype=np.uint8)
        for d, n, arr in ((lq_d, lq_n, base), (gt_d, gt_n, base + 64)):
            os.makedirs(r / d, exist_ok=True)
            Image.fromarray(arr).save(r / d / n, quality=100) if n.endswith("jpg") else Image.fromarray(arr).save(r / d / n)
    return r


def test_stage2_mixture_crops_are_paired_and_deterministic(tmp_path):
    root = _official_root(tmp_path)
    tasks = ["blur", "lowlight", "haze"]
    ds = build_stage2_dataset(str(root), tasks, crop_size=16, flip=True, rot90=True, seed=3)
    seen = set()
    for i in range(30):
        s = ds[i]
        assert s["lq"].shape == s["gt"].shape == (3, 16, 16)
        assert torch.allclose(s["gt"] - s["lq"], torch.full_like(s["lq"], 64 / 255), atol=1e-6)  # same window
        seen.add(s["task"])
        assert torch.equal(ds[i]["lq"], s["lq"])  # a sample id always gives the same sample
    assert seen == set(tasks)
    other = build_stage2_dataset(str(root), tasks, crop_size=16, flip=True, rot90=True, seed=4)
    assert any(not torch.equal(other[i]["lq"], ds[i]["lq"]) for i in range(5))


def test_task_weights(tmp_path):
    root = _official_root(tmp_path)
    ds = build_stage2_dataset(str(root), ["blur", "lowlight"], task_weights=[1.0, 0.0], crop_size=8)
    assert {ds[i]["task"] for i in range(20)} == {"blur"}
    with pytest.raises(DataError, match="2 task weights for 3 tasks"):
        build_stage2_dataset(str(root), ["blur", "lowlight", "haze"], task_weights=[1, 1], crop_size=8)
    with pytest.raises(DataError, match="realnoise.*Looked for: SIDD/train/input"):
        build_stage2_dataset(str(root), ["realnoise"], crop_size=8)
    with pytest.raises(DataError, match="training data root not found"):
        build_stage2_dataset(str(tmp_path / "nope"), ["blur"])


def test_small_image_rule():
    rng = np.random.default_rng(0)
    lq = np.zeros((10, 12, 3), np.float32)
    gt = np.ones((10, 12, 3), np.float32) * 0.5
    a, b = paired_random_crop(lq, gt, 16, rng, "official")
    assert a.shape == b.shape == (16, 16, 3) and np.array_equal(a, b)  # official: identity pair from the GT
    a, b = paired_random_crop(lq, gt, 16, rng, "resize-both")
    assert np.allclose(a, 0) and np.allclose(b, 0.5)


def test_stage1_clean_pairs(tmp_path):
    for i in range(3):
        write_rgb(str(tmp_path / "DF2K" / f"{i:04d}.png"), 30, 40, seed=i)
    ds = build_stage1_dataset(str(tmp_path / "DF2K"), crop_size=16, seed=0)
    s = ds[4]
    assert s["lq"].shape == (3, 16, 16) and torch.equal(s["lq"], s["gt"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images"):
        build_stage1_dataset(str(tmp_path / "empty"))


def test_gopro_per_sequence_training_layout(tmp_path):
    from varformer.data.train_sets import find_training_source
    for seq in ("GOPR0372_07_00", "GOPR0374_11_00"):
        for sub in ("blur", "blur_gamma", "sharp"):
            for frame in ("000047.png", "000048.png"):
                write_rgb(str(tmp_path / "GOPRO_Large" / "train" / seq / sub / frame))
    src = find_training_source(str(tmp_path), "blur")
    assert len(src) == 4 and src.pairs[0] == ("GOPR0372_07_00/blur/000047.png", "GOPR0372_07_00/sharp/000047.png")


def test_cycle_task_order_goes_round_the_tasks(tmp_path):
    root = _official_root(tmp_path)
    tasks = ["blur", "lowlight", "haze"]
    ds = build_stage2_dataset(str(root), tasks, crop_size=8, seed=0, task_order="cycle")
    assert [ds[i]["task"] for i in range(7)] == tasks * 2 + ["blur"]
    with pytest.raises(DataError, match="cannot honour task weights"):
        build_stage2_dataset(str(root), ["blur", "lowlight"], task_weights=[1, 2], crop_size=8, task_order="cycle")
    with pytest.raises(DataError, match="task order must be one of"):
        build_stage2_dataset(str(root), ["blur"], crop_size=8, task_order="roundrobin")
