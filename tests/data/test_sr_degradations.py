"""The real-world SR degradation model (varformer/data/sr_degradations.py) and its training dataset
(varformer/data/sr_train.py): kernels, ranges and order, OpenCV equivalence of the operations, determinism,
sources and captions."""
import json
import math
import os

import numpy as np
import pytest
from PIL import Image

from varformer.data.sr_degradations import (SRDegradationSettings, add_gaussian_noise, bivariate_gaussian_kernel,
                                            degrade_sr, filter2d_reflect101, jpeg_roundtrip, random_mixed_kernel,
                                            resize_linear, settings_from)
from varformer.data.sr_train import SRTrainingDataset, list_sr_sources, sentence_prefix_caption, SRSource
from varformer.errors import ConfigError, DataError


def _photo(h=96, w=80, seed=0, square=True):
    """Smooth gradients (and a coloured square: edges), float32 in [0, 1]."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    img = np.stack([x, y, 0.5 * (x + y)], -1) * 0.6 + 0.2
    if square:
        img[h // 4:h // 2, w // 4:w // 2] = rng.random(3) * 0.8
    return img.astype(np.float32)


def test_kernels_are_normalised_gaussians():
    iso = bivariate_gaussian_kernel(41, 3.0, 3.0, 0.0)
    assert iso.shape == (41, 41) and iso.dtype == np.float32
    assert math.isclose(float(iso.sum()), 1.0, rel_tol=1e-5)
    assert np.allclose(iso, iso.T) and np.allclose(iso, iso[::-1, ::-1])
    assert np.unravel_index(iso.argmax(), iso.shape) == (20, 20)
    # variance along x of the normalised kernel ~ sigma^2 (the kernel is wide enough not to truncate sigma 3)
    ax = np.arange(41) - 20
    assert abs(float((iso.sum(0) * ax ** 2).sum()) - 9.0) < 0.05
    # anisotropic, rotated by 90 degrees = the transposed unrotated kernel
    a0 = bivariate_gaussian_kernel(41, 6.0, 1.5, 0.0)
    a90 = bivariate_gaussian_kernel(41, 6.0, 1.5, math.pi / 2)
    assert np.allclose(a90, a0.T, atol=1e-7)
    assert float((a0.sum(0) * ax ** 2).sum()) > 4 * float((a0.sum(1) * ax ** 2).sum())   # wide along x


def test_drawn_values_stay_in_the_release_ranges():
    s = SRDegradationSettings()
    kinds, scales, sigmas, qualities = set(), [], [], []
    for i in range(40):
        rng = np.random.default_rng(i)
        _, p = random_mixed_kernel(rng, s)
        kinds.add(p["kernel"])
        assert 0.1 <= p["sigma_x"] <= 12 and 0.1 <= p["sigma_y"] <= 12 and -math.pi <= p["theta"] <= math.pi
        if p["kernel"] == "iso":
            assert p["sigma_y"] == p["sigma_x"] and p["theta"] == 0
    assert kinds == {"iso", "aniso"}
    img = _photo(64, 64)
    for i in range(12):
        lq, p = degrade_sr(img, np.random.default_rng(100 + i), s)
        assert lq.shape == img.shape and lq.dtype == np.float32 and 0 <= lq.min() and lq.max() <= 1
        assert 1 <= p["scale"] <= 12 and p["small_size"] == (int(64 // p["scale"]), int(64 // p["scale"]))
        scales.append(p["scale"])
        sigmas.append(p["noise_sigma"])
        qualities.append(p["jpeg_quality"])
        assert 0 <= p["noise_sigma"] <= 15 and 30 <= p["jpeg_quality"] <= 100
        assert isinstance(p["jpeg_quality"], int)
    # uniform draws: the sample spreads over the ranges
    assert min(scales) < 4 and max(scales) > 8
    assert max(sigmas) - min(sigmas) > 5 and max(qualities) - min(qualities) > 20


def test_pipeline_order_and_determinism():
    """degrade_sr = blur -> downsample -> noise -> JPEG -> resize back, each draw in that order from one
    generator; the same generator state gives the same LQ."""
    s = SRDegradationSettings()
    img = _photo()
    lq, p = degrade_sr(img, np.random.default_rng(7), s)
    again, _ = degrade_sr(img, np.random.default_rng(7), s)
    assert np.array_equal(lq, again)
    rng = np.random.default_rng(7)
    kernel, _ = random_mixed_kernel(rng, s)
    x = filter2d_reflect101(img, kernel)
    scale = rng.uniform(*s.downsample)
    x = resize_linear(x, int(img.shape[1] // scale), int(img.shape[0] // scale))
    x = add_gaussian_noise(x, rng.uniform(*s.noise_sigma), rng)
    x = jpeg_roundtrip(x, int(rng.uniform(*s.jpeg_quality)))
    x = resize_linear(x, img.shape[1], img.shape[0])
    assert scale == p["scale"]
    assert np.array_equal(np.clip(x, 0, 1), lq)
    other, _ = degrade_sr(img, np.random.default_rng(8), s)
    assert not np.array_equal(other, lq)


def test_no_degradation_limits_give_back_the_image():
    """Ranges pinned at their identity values (tiny blur, scale 1, no noise, JPEG 100): the LQ is the GT up to JPEG
    rounding (smooth image: 4:2:0 chroma would smear sharp colour edges), which checks every step takes its range
    from the settings."""
    s = SRDegradationSettings(kernel_size=3, kernel_types=["iso"], kernel_probs=[1.0], blur_sigma=[0.05, 0.05],
                              downsample=[1.0, 1.0], noise_sigma=[0.0, 0.0], jpeg_quality=[100.0, 100.0]).validate()
    img = _photo(square=False)
    lq, p = degrade_sr(img, np.random.default_rng(0), s)
    assert p["small_size"] == (img.shape[1], img.shape[0]) and p["noise_sigma"] == 0
    assert np.abs(lq - img).max() < 4 / 255


def test_operations_match_opencv():
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(0)
    img = rng.random((70, 90, 3)).astype(np.float32)
    k = bivariate_gaussian_kernel(41, 4.0, 1.5, 0.6)
    assert np.abs(filter2d_reflect101(img, k) - cv2.filter2D(img, -1, k)).max() < 1e-5
    for w, h in ((7, 5), (45, 35), (90, 70), (200, 150)):
        ref = cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)
        assert np.abs(resize_linear(img, w, h) - ref).max() < 1e-4
    u8 = np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)
    ok, enc = cv2.imencode(".jpg", u8[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 43])
    ref = cv2.imdecode(enc, cv2.IMREAD_COLOR)[..., ::-1].astype(np.float32) / 255
    assert np.abs(jpeg_roundtrip(img, 43) - ref).max() <= 1 / 255 + 1e-6


def test_settings_are_checked():
    with pytest.raises(ConfigError, match="kernel_size"):
        SRDegradationSettings(kernel_size=40).validate()
    with pytest.raises(ConfigError, match="kernel_probs"):
        SRDegradationSettings(kernel_probs=[0.5, 0.6]).validate()
    with pytest.raises(ConfigError, match="downsample"):
        SRDegradationSettings(downsample=[0.5, 2.0]).validate()
    with pytest.raises(ConfigError, match="kernel_types"):
        SRDegradationSettings(kernel_types=["plateau"], kernel_probs=[1.0]).validate()

    class Section:
        kernel_size, kernel_types, kernel_probs = 21, ("iso",), (1.0,)
        blur_sigma, downsample, noise_sigma, jpeg_quality = (1, 2), (1, 4), (0, 5), (60, 90)
    assert settings_from(Section()).kernel_types == ["iso"]


# -------------------------------------------------------------------------------------------------- the dataset
def _write(path, h, w, seed):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)


def test_dataset_from_a_folder(tmp_path):
    _write(str(tmp_path / "a" / "x.png"), 80, 100, 0)
    _write(str(tmp_path / "b" / "y.jpg"), 120, 70, 1)
    sources = list_sr_sources(str(tmp_path))
    assert [os.path.basename(s.path) for s in sources] == ["x.png", "y.jpg"]
    ds = SRTrainingDataset(sources, size=64, seed=3, caption_source="fixed", fixed_prompt="a photo")
    item = ds[1]
    assert list(item)[:2] == ["lq", "gt"]            # the trainer reads the batch size from the first entry
    assert item["lq"].shape == item["gt"].shape == (3, 64, 64) and item["caption"] == "a photo"
    assert item["name"] == "y"
    again = ds[1]
    assert all(bool((item[k] == again[k]).all()) for k in ("lq", "gt"))
    assert not bool((ds[3]["lq"] == item["lq"]).all())    # another id of the same image: other draws


def test_dataset_from_infinity_jsonl(tmp_path):
    _write(str(tmp_path / "img" / "p.png"), 64, 64, 0)
    lines = [{"image_path": "img/p.png", "h_div_w": 1.0, "text": "a cat",
              "long_caption": "A cat sits. It is grey! The wall is red.", "long_caption_type": "caption"}]
    (tmp_path / "1.000_1.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    sources = list_sr_sources(str(tmp_path))
    assert sources[0].text == "a cat" and sources[0].path == str(tmp_path / "img" / "p.png")
    ds = SRTrainingDataset(sources, size=64, caption_source="jsonl", short_caption_prob=0.2)
    seen = {ds[i]["caption"] for i in range(40)}
    assert seen == {"a cat", "A cat sits.", "A cat sits. It is grey!", "A cat sits. It is grey! The wall is red."}
    (tmp_path / "bad.jsonl").write_text('{"text": "no path"}\n')
    with pytest.raises(DataError, match="image_path"):
        list_sr_sources(str(tmp_path / "bad.jsonl"))


def test_caption_rules_and_refusals(tmp_path):
    src = SRSource("x.png", text="short", long_caption="")
    assert sentence_prefix_caption(src, np.random.default_rng(0), 0.0) == "short"     # no long caption
    with pytest.raises(DataError, match="jsonl"):
        SRTrainingDataset([SRSource("x.png")], caption_source="jsonl")
    with pytest.raises(DataError, match="not found"):
        list_sr_sources(str(tmp_path / "missing"))
    _write(str(tmp_path / "s.png"), 40, 40, 0)
    with pytest.raises(DataError, match="below the crop size"):
        SRTrainingDataset(list_sr_sources(str(tmp_path)), size=64, resize_short=48)
    small = SRTrainingDataset(list_sr_sources(str(tmp_path)), size=64, caption_source="fixed")[0]
    assert small["gt"].shape == (3, 64, 64)          # a 40 x 40 image is enlarged (Lanczos) to the crop
