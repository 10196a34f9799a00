"""Fixtures for the data tests: a root holding a miniature of every real benchmark layout."""
import os

import numpy as np
import pytest

from data_helpers import make_pairs, write_rgb


@pytest.fixture
def layouts(tmp_path):
    """One root holding a miniature of every layout variant."""
    root = tmp_path / "data"
    r = str(root)
    # Restormer archive: test/<Set>/{input,target}, identical names
    make_pairs(f"{r}/test/Rain100H", "input", "target", ["1.png", "2.png", "3.png"], ["1.png", "2.png", "3.png"])
    # AirNet/PromptIR family: rainy/rain-N <-> gt/norain-N
    make_pairs(f"{r}/Rain100L", "rainy", "gt", ["rain-1.png", "rain-2.png"], ["norain-1.png", "norain-2.png"])
    # VarFormer config: derain/test/Test100/{input,target} with .jpg inputs and .png targets
    make_pairs(f"{r}/derain/test/Test100", "input", "target", ["1.jpg", "2.jpg"], ["1.png", "2.png"])
    # VarFormer GoPro: groundtruth folder, flattened names
    make_pairs(f"{r}/deblur/GoPro/test", "input", "groundtruth",
               ["GOPR0384_11_00-000001.png", "GOPR0384_11_00-000002.png"],
               ["GOPR0384_11_00-000001.png", "GOPR0384_11_00-000002.png"])
    # original per-sequence GoPro
    for seq in ("GOPR0384_11_00", "GOPR0862_11_00"):
        make_pairs(f"{r}/GOPRO_Large/test/{seq}", "blur", "sharp", ["000001.png", "000002.png"],
                   ["000001.png", "000002.png"])
    # SOTS outdoor: prefix rule
    make_pairs(f"{r}/SOTS/outdoor", "hazy", "gt", ["0001_0.8_0.2.jpg", "0002_0.9_0.16.jpg"], ["0001.png", "0002.png"])
    # SOTS indoor: hazy smaller than GT
    for i, n in enumerate(["1400", "1401"]):
        write_rgb(f"{r}/SOTS/indoor/hazy/{n}_1.png", 10, 14, seed=i)
        write_rgb(f"{r}/SOTS/indoor/gt/{n}.png", 12, 16, seed=i + 5)
    # LOL v1
    make_pairs(f"{r}/LOLdataset/eval15", "low", "high", ["1.png", "22.png"], ["1.png", "22.png"])
    # CBSD68 clean images
    for i in range(3):
        write_rgb(f"{r}/CBSD68/original_png/{i:04d}.png", 20, 24, seed=40 + i)
    # SIDD .mat validation blocks (2 images x 3 blocks of 8x8)
    import scipy.io
    rng = np.random.default_rng(7)
    sidd = f"{r}/SIDD/val"
    os.makedirs(sidd)
    scipy.io.savemat(f"{sidd}/ValidationNoisyBlocksSrgb.mat",
                     {"ValidationNoisyBlocksSrgb": rng.integers(0, 256, (2, 3, 8, 8, 3), dtype=np.uint8)})
    scipy.io.savemat(f"{sidd}/ValidationGtBlocksSrgb.mat",
                     {"ValidationGtBlocksSrgb": rng.integers(0, 256, (2, 3, 8, 8, 3), dtype=np.uint8)})
    return root
