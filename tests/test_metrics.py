"""varformer.metrics against scikit-image and independent numpy/scipy computations on real photographs."""
import math

import numpy as np
import pytest
import torch
from scipy import ndimage
from skimage import color, data
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from varformer import metrics
from varformer.errors import CheckpointMismatchError, WeightsNotFoundError
from varformer.metrics import MetricInputError, lpips_distance, psnr, ssim


def _photo_pairs():
    """(clean, degraded) uint8 RGB crops of scikit-image photographs: Gaussian noise, blur, and both."""
    rng = np.random.default_rng(0)
    crops = {
        "astronaut": data.astronaut()[40:200, 160:320],
        "chelsea": data.chelsea()[60:188, 100:260],
        "coffee": data.coffee()[150:294, 200:344],
    }
    pairs = {}
    for name, clean in crops.items():
        f = clean.astype(np.float64)
        noisy = f + rng.normal(0, 15, f.shape)
        blurred = ndimage.gaussian_filter(f, sigma=(1.2, 1.2, 0))
        both = blurred + rng.normal(0, 6, f.shape)
        for kind, deg in (("noise", noisy), ("blur", blurred), ("blur+noise", both)):
            pairs[f"{name}-{kind}"] = (clean, np.clip(np.round(deg), 0, 255).astype(np.uint8))
    return pairs


PAIRS = _photo_pairs()
SOME_PAIRS = ["astronaut-noise", "chelsea-blur", "coffee-blur+noise"]


def _crop(x, n):
    return x[n:-n, n:-n] if n else x


def _matlab_y(rgb_uint8):
    """Y of MATLAB rgb2ycbcr on the 0-255 scale, via scikit-image's rgb2ycbcr (same BT.601 matrix)."""
    return color.rgb2ycbcr(rgb_uint8)[..., 0]


def _skimage_gaussian_ssim(a, b, **kw):
    return structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                 data_range=255, **kw)


def _to_tensor(x_HW3_uint8):
    return torch.from_numpy(x_HW3_uint8).permute(2, 0, 1)[None].double() / 255.0


# ------------------------------------------------------------------------------------------- default BasicSR/MATLAB
@pytest.mark.parametrize("name", sorted(PAIRS))
@pytest.mark.parametrize("crop_border", [0, 4])
def test_psnr_ssim_rgb_match_skimage(name, crop_border):
    clean, deg = PAIRS[name]
    a, b = _crop(clean, crop_border), _crop(deg, crop_border)
    ref_psnr = peak_signal_noise_ratio(a, b, data_range=255)
    ref_ssim = _skimage_gaussian_ssim(a.astype(np.float64), b.astype(np.float64), channel_axis=2)
    got_psnr = psnr(deg, clean, crop_border=crop_border)
    got_ssim = ssim(deg, clean, crop_border=crop_border)
    assert isinstance(got_psnr, float) and isinstance(got_ssim, float)
    assert abs(got_psnr - ref_psnr) < 1e-4
    assert abs(got_ssim - ref_ssim) < 1e-5


@pytest.mark.parametrize("name", sorted(PAIRS))
@pytest.mark.parametrize("crop_border", [0, 4])
def test_psnr_ssim_y_channel_match_skimage(name, crop_border):
    clean, deg = PAIRS[name]
    ya, yb = _matlab_y(_crop(clean, crop_border)), _matlab_y(_crop(deg, crop_border))
    assert 16 <= ya.min() and ya.max() <= 235  # limited range
    ref_psnr = peak_signal_noise_ratio(ya, yb, data_range=255)
    ref_ssim = _skimage_gaussian_ssim(ya, yb)
    assert abs(psnr(deg, clean, crop_border=crop_border, y_channel=True) - ref_psnr) < 1e-4
    assert abs(ssim(deg, clean, crop_border=crop_border, y_channel=True) - ref_ssim) < 1e-5


def test_tensor_batch_matches_numpy():
    names = SOME_PAIRS
    clean = torch.cat([_to_tensor(PAIRS[n][0][:128, :128]) for n in names]).float()
    deg = torch.cat([_to_tensor(PAIRS[n][1][:128, :128]) for n in names]).float()
    for kw in ({}, {"y_channel": True, "crop_border": 4}, {"ssim_mode": "replicate"},
               {"ssim_mode": "skimage_default", "y_channel": True, "luma": "full_range"}):
        ssim_kw = dict(kw)
        psnr_kw = {k: v for k, v in kw.items() if k != "ssim_mode"}
        p, s = psnr(deg, clean, **psnr_kw), ssim(deg, clean, **ssim_kw)
        assert isinstance(p, torch.Tensor) and p.shape == (3,) and s.shape == (3,)
        for i, n in enumerate(names):
            c, d = PAIRS[n][0][:128, :128], PAIRS[n][1][:128, :128]
            assert abs(float(p[i]) - psnr(d, c, **psnr_kw)) < 1e-9
            assert abs(float(s[i]) - ssim(d, c, **ssim_kw)) < 1e-9
    # a numpy batch gives a numpy vector with the same numbers
    np_batch = psnr(np.stack([PAIRS[n][1][:128, :128] for n in names]),
                    np.stack([PAIRS[n][0][:128, :128] for n in names]))
    assert isinstance(np_batch, np.ndarray) and np_batch.shape == (3,)
    np.testing.assert_allclose(np_batch, psnr(deg, clean).numpy(), atol=1e-9)


def test_float_tensor_is_quantised_like_a_saved_png():
    clean, _ = PAIRS["chelsea-noise"]
    rng = np.random.default_rng(1)
    pred = np.clip(clean / 255.0 + rng.normal(0, 0.05, clean.shape), -0.1, 1.1)  # a raw network output
    saved = np.round(np.clip(pred, 0, 1) * 255).astype(np.uint8)
    pred_t = torch.from_numpy(pred).permute(2, 0, 1)[None].float()
    assert abs(float(psnr(pred_t, _to_tensor(clean))[0]) - psnr(saved, clean)) < 1e-9
    assert abs(float(ssim(pred_t, _to_tensor(clean))[0]) - ssim(saved, clean)) < 1e-9
    # quantize=False: PSNR on the clipped floats, as skimage with data_range=1 (the AirNet-family convention)
    ref = peak_signal_noise_ratio(clean / 255.0, np.clip(pred, 0, 1), data_range=1)
    got = float(psnr(pred_t.double(), _to_tensor(clean), quantize=False)[0])
    assert abs(got - ref) < 1e-4 and abs(got - psnr(saved, clean)) > 1e-3


# ------------------------------------------------------------------------------------------------- named options
@pytest.mark.parametrize("name", SOME_PAIRS)
def test_full_range_luma_matches_yiq(name):
    clean, deg = PAIRS[name]
    ya, yb = color.rgb2yiq(clean)[..., 0] * 255, color.rgb2yiq(deg)[..., 0] * 255
    assert abs(psnr(deg, clean, y_channel=True, luma="full_range")
               - peak_signal_noise_ratio(ya, yb, data_range=255)) < 1e-4
    assert abs(ssim(deg, clean, y_channel=True, luma="full_range") - _skimage_gaussian_ssim(ya, yb)) < 1e-5
    # the known gap between the two luma conventions: 20*log10(255/219) dB
    gap = psnr(deg, clean, y_channel=True) - psnr(deg, clean, y_channel=True, luma="full_range")
    assert abs(gap - 20 * math.log10(255 / 219)) < 1e-3


@pytest.mark.parametrize("name", SOME_PAIRS)
def test_skimage_default_ssim_matches_skimage_defaults(name):
    clean, deg = PAIRS[name]
    ref_rgb = structural_similarity(clean / 255.0, deg / 255.0, data_range=1, channel_axis=2)
    assert abs(ssim(deg, clean, ssim_mode="skimage_default") - ref_rgb) < 1e-5
    ya, yb = _matlab_y(clean), _matlab_y(deg)
    assert abs(ssim(deg, clean, ssim_mode="skimage_default", y_channel=True)
               - structural_similarity(ya, yb, data_range=255)) < 1e-5


def _replicate_ssim_reference(a, b, window):
    """Independent SSIM map with scipy: correlate with `window`, borders replicated ('nearest'), mean of the map."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    filt = lambda x: ndimage.correlate(x, window, mode="nearest")  # noqa: E731
    mu_a, mu_b = filt(a), filt(b)
    va, vb, cab = filt(a * a) - mu_a ** 2, filt(b * b) - mu_b ** 2, filt(a * b) - mu_a * mu_b
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    m = (2 * mu_a * mu_b + c1) * (2 * cab + c2) / ((mu_a ** 2 + mu_b ** 2 + c1) * (va + vb + c2))
    return m.mean()


@pytest.mark.parametrize("name", SOME_PAIRS)
def test_replicate_ssim_matches_scipy(name):
    clean, deg = PAIRS[name]
    r = np.arange(11) - 5.0
    g = np.exp(-r ** 2 / (2 * 1.5 ** 2))
    g /= g.sum()
    # on Y: 2-D Gaussian window; on RGB: 3-D Gaussian over (H, W, C)
    ref_y = _replicate_ssim_reference(_matlab_y(clean), _matlab_y(deg), np.outer(g, g))
    assert abs(ssim(deg, clean, y_channel=True, ssim_mode="replicate") - ref_y) < 1e-5
    ref_rgb = _replicate_ssim_reference(clean, deg, g[:, None, None] * g[None, :, None] * g[None, None, :])
    assert abs(ssim(deg, clean, ssim_mode="replicate") - ref_rgb) < 1e-5


# ---------------------------------------------------------------- the MATLAB scripts' rules (docs/evaluation.md)
def _rounded_y_exact(rgb_uint8):
    """Y of rgb2ycbcr on uint8 in exact integer arithmetic: Y = (65481 R + 128553 G + 24966 B + 4080000) / 255000,
    rounded half up; and where it is an exact .5 (there MATLAB's double sum decides, docs/evaluation.md)."""
    r, g, b = (rgb_uint8[..., i].astype(np.int64) for i in range(3))
    n = 65481 * r + 128553 * g + 24966 * b + 4080000
    return ((n + 127500) // 255000).astype(np.float64), n % 255000 == 127500


@pytest.mark.parametrize("name", SOME_PAIRS)
def test_rounded_matlab_luma(name):
    """luma='matlab_uint8': MATLAB's rgb2ycbcr on uint8 returns uint8, so Y is rounded before measuring."""
    clean, deg = PAIRS[name]
    ys = []
    for img in (deg, clean):
        ours = metrics.rgb_to_luma(img.transpose(2, 0, 1)[None].astype(np.float64), "matlab_uint8")[0, 0]
        exact, tie = _rounded_y_exact(img)
        assert np.array_equal(ours[~tie], exact[~tie]) and np.all(np.abs(ours - exact)[tie] <= 1)
        ys.append(ours)
    got = psnr(deg, clean, y_channel=True, luma="matlab_uint8")
    assert abs(got - peak_signal_noise_ratio(ys[1], ys[0], data_range=255)) < 1e-9
    assert abs(ssim(deg, clean, y_channel=True, luma="matlab_uint8") - _skimage_gaussian_ssim(ys[1], ys[0])) < 1e-6
    assert abs(got - psnr(deg, clean, y_channel=True)) > 1e-3  # unrounded Y reads differently
    with pytest.raises(MetricInputError, match="8-bit inputs"):
        psnr(_to_tensor(deg), _to_tensor(clean), y_channel=True, luma="matlab_uint8", quantize=False)


def test_one_channel_image_skips_luma():
    """gray_skips_luma: a 1-channel target is measured as it is against the Y of a 3-channel prediction."""
    clean, deg = PAIRS["coffee-noise"]
    gray = clean[..., 1]
    y = metrics.rgb_to_luma(deg.transpose(2, 0, 1)[None].astype(np.float64), "matlab_uint8")[0, 0].astype(np.uint8)
    got = psnr(deg, gray[..., None], y_channel=True, luma="matlab_uint8", gray_skips_luma=True)
    assert got == psnr(y, gray)
    assert ssim(deg, gray[..., None], y_channel=True, luma="matlab_uint8", gray_skips_luma=True) == ssim(y, gray)
    with pytest.raises(MetricInputError, match="differ in shape"):
        psnr(deg, gray[..., None], y_channel=True)
    with pytest.raises(MetricInputError, match="differ in size"):
        psnr(deg, gray[:-1, :, None], y_channel=True, gray_skips_luma=True)


def test_float32_quantisation_is_img_as_ubyte():
    from skimage import img_as_ubyte

    rng = np.random.default_rng(2)
    out = torch.from_numpy(rng.random((2, 3, 64, 80), dtype=np.float32))
    out[0, 0, 0, :3] = torch.tensor([0.5 / 255, 254.5 / 255, 1.2])  # near ties, clamped values
    ref = np.stack([img_as_ubyte(o.clamp(0, 1).permute(1, 2, 0).numpy()) for o in out])
    target = np.zeros_like(ref)
    got = psnr(out, torch.from_numpy(target).permute(0, 3, 1, 2), quantize="float32")
    np.testing.assert_array_equal(got.numpy(), psnr(ref, target))
    with pytest.raises(MetricInputError, match="quantize"):
        psnr(out, out, quantize="float16")


# ------------------------------------------------------------------------------------------------ edge cases, errors
@pytest.mark.parametrize("ssim_mode", metrics.SSIM_MODES)
def test_identical_images(ssim_mode):
    clean, _ = PAIRS["coffee-noise"]
    assert psnr(clean, clean.copy()) == math.inf
    assert psnr(clean, clean, y_channel=True, crop_border=4) == math.inf
    assert ssim(clean, clean.copy(), ssim_mode=ssim_mode) == pytest.approx(1.0, abs=1e-12)
    t = _to_tensor(clean).float().repeat(2, 1, 1, 1)
    assert torch.isinf(psnr(t, t)).all()
    assert torch.allclose(ssim(t, t, ssim_mode=ssim_mode), torch.ones(2, dtype=torch.float64))


def test_shape_mismatch_message_shows_both_shapes():
    a = np.zeros((64, 64, 3), np.uint8)
    with pytest.raises(ValueError, match=r"\(64, 64, 3\).*\(64, 60, 3\)"):
        psnr(a, np.zeros((64, 60, 3), np.uint8))
    with pytest.raises(ValueError, match=r"\(1, 3, 32, 32\).*\(1, 1, 32, 32\)"):
        ssim(torch.zeros(1, 3, 32, 32), torch.zeros(1, 1, 32, 32))


@pytest.mark.parametrize("bad, match", [
    ((np.zeros((32, 32, 3), np.float32), np.zeros((32, 32, 3), np.float32)), "uint8"),
    ((torch.zeros(3, 32, 32), torch.zeros(3, 32, 32)), "batch dimension"),
    ((np.zeros((32, 32, 3), np.uint8), torch.zeros(1, 3, 32, 32)), "numpy arrays or both tensors"),
    ((torch.full((1, 3, 32, 32), float("nan")), torch.zeros(1, 3, 32, 32)), "NaN"),
    ((np.zeros((32, 32, 4), np.uint8), np.zeros((32, 32, 4), np.uint8)), r"\(H,W,3\)"),
])
def test_bad_inputs_are_named(bad, match):
    with pytest.raises(MetricInputError, match=match):
        psnr(*bad)


def test_bad_options_and_too_small_images():
    a = np.zeros((32, 32, 3), np.uint8)
    with pytest.raises(MetricInputError, match="luma"):
        psnr(a, a, y_channel=True, luma="pil")
    with pytest.raises(MetricInputError, match="ssim_mode"):
        ssim(a, a, ssim_mode="gaussian")
    with pytest.raises(MetricInputError, match="crop_border"):
        psnr(a, a, crop_border=16)
    with pytest.raises(MetricInputError, match="at least 11x11"):
        ssim(a, a, crop_border=11)
    with pytest.raises(MetricInputError, match="RGB"):
        psnr(a[..., :1], a[..., :1], y_channel=True)


# ------------------------------------------------------------------------------------------------------------ LPIPS
def _no_alexnet_anywhere(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(metrics, "REPO_CHECKPOINTS_DIR", tmp_path / "repo_checkpoints")
    metrics._LPIPS_MODELS.clear()


def test_lpips_missing_backbone_is_a_clear_error(monkeypatch, tmp_path):
    _no_alexnet_anywhere(monkeypatch, tmp_path)
    x = torch.zeros(1, 3, 64, 64)
    with pytest.raises(WeightsNotFoundError) as err:
        lpips_distance(x, x)
    msg = str(err.value)
    assert metrics.ALEXNET_FILE in msg and metrics.ALEXNET_URL in msg and "checkpoints" in msg
    assert str(tmp_path / "torch_home" / "hub" / "checkpoints") in msg
    with pytest.raises(WeightsNotFoundError, match="elsewhere.pth"):
        metrics.load_lpips(tmp_path / "elsewhere.pth")


def test_lpips_loads_backbone_from_local_file(monkeypatch, tmp_path):
    import torchvision

    _no_alexnet_anywhere(monkeypatch, tmp_path)
    torch.manual_seed(0)
    alexnet_sd = torchvision.models.alexnet(weights=None).state_dict()
    (tmp_path / "checkpoints").mkdir()
    torch.save(alexnet_sd, tmp_path / "checkpoints" / metrics.ALEXNET_FILE)  # ./checkpoints is searched first
    model = metrics.load_lpips()
    assert torch.equal(model.net.slice1._modules["0"].weight, alexnet_sd["features.0.weight"])
    assert torch.equal(model.net.slice5._modules["10"].bias, alexnet_sd["features.10.bias"])

    clean, deg = PAIRS["astronaut-noise"]
    a, b = _to_tensor(clean[:64, :64]).float(), _to_tensor(deg[:64, :64]).float()
    batch_a, batch_b = torch.cat([a, a]), torch.cat([a, b])
    d = lpips_distance(batch_b, batch_a)
    assert d.shape == (2,) and float(d[0]) == 0.0 and float(d[1]) > 0
    with torch.no_grad():
        direct = model(b * 2 - 1, a * 2 - 1).reshape(-1)
    assert abs(float(d[1]) - float(direct)) < 1e-5
    assert abs(lpips_distance(deg[:64, :64], clean[:64, :64]) - float(d[1])) < 1e-6

    bad = dict(alexnet_sd)
    del bad["features.3.weight"]
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(CheckpointMismatchError, match="features.3.weight"):
        metrics.load_lpips(tmp_path / "bad.pth")


def test_chunked_batches_give_the_same_numbers(monkeypatch):
    x = torch.cat([_to_tensor(PAIRS[n][1][:64, :64]) for n in SOME_PAIRS]).float()
    y = torch.cat([_to_tensor(PAIRS[n][0][:64, :64]) for n in SOME_PAIRS]).float()
    monkeypatch.setattr(metrics, "_SSIM_CHUNK_BYTES", {"cpu": 2 ** 30, "cuda": 2 ** 30})  # the whole batch at once
    whole = {mode: ssim(x, y, ssim_mode=mode) for mode in metrics.SSIM_MODES}
    monkeypatch.setattr(metrics, "_SSIM_CHUNK_BYTES", {"cpu": 1, "cuda": 1})  # one image per chunk
    for mode in metrics.SSIM_MODES:
        assert torch.equal(ssim(x, y, ssim_mode=mode), whole[mode])


def test_lpips_corrupt_backbone_file_is_named(tmp_path):
    bad = tmp_path / metrics.ALEXNET_FILE
    bad.write_text("<html>404</html>")
    with pytest.raises(CheckpointMismatchError, match="download it again"):
        metrics.load_lpips(bad)


@pytest.mark.parametrize("kw", [{}, {"y_channel": True, "crop_border": 4}, {"ssim_mode": "replicate"},
                                {"ssim_mode": "replicate", "y_channel": True},
                                {"ssim_mode": "skimage_default", "luma": "full_range", "y_channel": True},
                                {"y_channel": True, "luma": "matlab_uint8", "quantize": "float32"}])
def test_torch_code_path_matches_numpy_code_path(monkeypatch, kw):
    """CPU inputs run on numpy; GPU inputs on torch. Force the torch path on CPU and compare."""
    x = torch.cat([_to_tensor(PAIRS[n][1][:64, :80]) for n in SOME_PAIRS]).float()
    y = torch.cat([_to_tensor(PAIRS[n][0][:64, :80]) for n in SOME_PAIRS]).float()
    psnr_kw = {k: v for k, v in kw.items() if k != "ssim_mode"}
    ref_p, ref_s = psnr(x, y, **psnr_kw), ssim(x, y, **kw)
    monkeypatch.setattr(metrics, "_CPU_BACKEND", "torch")
    got_p, got_s = psnr(x, y, **psnr_kw), ssim(x, y, **kw)
    assert got_p.dtype == ref_p.dtype == torch.float64 and got_s.shape == ref_s.shape == (3,)
    torch.testing.assert_close(got_p, ref_p, rtol=0, atol=1e-10)
    torch.testing.assert_close(got_s, ref_s, rtol=0, atol=1e-12)
    assert torch.isinf(psnr(x, x)).all() and torch.allclose(ssim(x, x, **kw), torch.ones(3, dtype=torch.float64))
