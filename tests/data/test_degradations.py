"""varformer.data.degradations: determinism, ranges, and the physical properties of each model."""
import numpy as np
import pytest
import torch
from scipy import ndimage
from skimage import data

from varformer.data import degradations as deg
from varformer.data.degradations import DEGRADATIONS, DegradationParameterError


@pytest.fixture(scope="module")
def photo():
    """A real 256x256 RGB photograph in [0, 1]."""
    return (data.astronaut()[::2, ::2].astype(np.float32) / 255.0).copy()


@pytest.fixture(scope="module")
def grey():
    return np.full((96, 96, 3), 0.5, np.float32)


def test_registry_names():
    assert set(DEGRADATIONS) == {"rain", "haze", "blur", "lowlight", "noise"}


@pytest.mark.parametrize("task", sorted(DEGRADATIONS))
def test_deterministic_shapes_and_ranges(task, photo):
    fn = DEGRADATIONS[task]
    before = photo.copy()
    a = fn(photo, 7)
    b, c = fn(photo, 7), fn(photo, 8)
    np.testing.assert_array_equal(photo, before)  # the input is not modified
    assert a.dtype == np.float32 and a.shape == photo.shape
    assert 0.0 <= a.min() and a.max() <= 1.0
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).mean() > 1e-3
    assert np.abs(a - photo).mean() > 1e-3


# ------------------------------------------------------------------------------------------------------------- haze
def test_haze_follows_the_scattering_model(photo):
    H, W, _ = photo.shape
    depth = np.tile(np.linspace(0, 1, W, dtype=np.float32), (H, 1))
    out = deg.add_haze(photo, 0, depth=depth, beta=1.5, airlight=0.9)
    t = np.exp(-1.5 * depth)[:, :, None]
    np.testing.assert_allclose(out, photo * t + 0.9 * (1 - t), atol=1e-6)
    # zero depth: t = 1, nothing changes; dense haze with A = 1: the image tends to A
    np.testing.assert_allclose(deg.add_haze(photo, 0, depth=np.zeros((H, W)), beta=5.0), photo, atol=1e-7)
    dense = deg.add_haze(photo, 0, depth=np.ones((H, W)), beta=20.0, airlight=1.0)
    assert dense.min() > 1 - 1e-6
    # haze pulls every pixel towards A: |I - A| <= |J - A|
    default = deg.add_haze(photo, 3, airlight=1.0)
    assert np.all(1.0 - default <= 1.0 - photo + 1e-6)


def test_depth_maps():
    prior = deg.smooth_depth_prior(120, 90, seed=4)
    assert prior.shape == (120, 90) and prior.dtype == np.float32
    assert 0.0 <= prior.min() and prior.max() <= 1.0
    assert prior[:20].mean() > prior[-20:].mean() + 0.3  # farther towards the top of the frame
    np.testing.assert_array_equal(prior, deg.smooth_depth_prior(120, 90, seed=4))

    moto_depth = deg.motorcycle_depth()
    left = data.stereo_motorcycle()[0]
    assert moto_depth.shape == left.shape[:2]
    assert np.isfinite(moto_depth).all() and 0.0 < moto_depth.min() and moto_depth.max() <= 1.0
    hazy = deg.add_haze(left.astype(np.float32) / 255, 0, depth=moto_depth, beta=2.0, airlight=1.0)
    assert hazy.shape == left.shape and hazy.mean() > left.mean() / 255


def test_haze_rejects_a_depth_map_of_another_size(photo):
    with pytest.raises(DegradationParameterError, match=r"\(10, 10\).*256x256"):
        deg.add_haze(photo, 0, depth=np.zeros((10, 10)))


# ------------------------------------------------------------------------------------------------------------- blur
@pytest.mark.parametrize("seed", range(6))
def test_motion_kernel_is_a_centred_psf(seed):
    k = deg.random_motion_kernel(seed)
    assert k.ndim == 2 and k.shape[0] == k.shape[1] and k.shape[0] % 2 == 1
    assert k.min() >= 0 and abs(float(k.sum()) - 1.0) < 1e-5
    c = (k.shape[0] - 1) / 2
    ys, xs = np.mgrid[: k.shape[0], : k.shape[1]]
    assert abs((k * ys).sum() - c) < 0.5 and abs((k * xs).sum() - c) < 0.5  # centroid at the centre
    assert deg.random_motion_kernel(seed, size=21).shape == (21, 21)
    np.testing.assert_array_equal(k, deg.random_motion_kernel(seed))


def test_motion_blur_is_convolution_with_the_seeded_kernel(photo):
    out = deg.motion_blur(photo, 5, size=15)
    k = deg.random_motion_kernel(5, size=15)
    ref = np.stack([ndimage.convolve(photo[..., i].astype(np.float64), k, mode="mirror") for i in range(3)], -1)
    np.testing.assert_allclose(out, ref, atol=1e-5)
    grad = lambda x: np.abs(np.diff(x, axis=0)).mean() + np.abs(np.diff(x, axis=1)).mean()  # noqa: E731
    assert grad(out) < 0.8 * grad(photo)
    flat = np.full((40, 40, 3), 0.3, np.float32)
    np.testing.assert_allclose(deg.motion_blur(flat, 1), flat, atol=1e-6)
    with pytest.raises(DegradationParameterError, match="odd"):
        deg.random_motion_kernel(0, size=10)


# ----------------------------------------------------------------------------------------------- noise, low light
def test_gaussian_noise_std_matches_sigma(grey):
    big = np.full((256, 256, 3), 0.5, np.float32)
    noise = deg.add_gaussian_noise(big, 0, sigma=15) - big
    assert abs(noise.std() - 15 / 255) < 0.02 * 15 / 255 and abs(noise.mean()) < 1e-3
    # fixing the strength does not change the noise realisation: sigma 10 is exactly twice sigma 5
    n5 = deg.add_gaussian_noise(grey, 3, sigma=5) - grey
    n10 = deg.add_gaussian_noise(grey, 3, sigma=10) - grey
    np.testing.assert_allclose(n10, 2 * n5, atol=1e-6)
    for mode in ("round", "truncate"):
        q = deg.add_gaussian_noise(grey, 3, sigma=25, quantize=mode) * 255
        np.testing.assert_allclose(q, np.round(q), atol=1e-3)
    assert (deg.add_gaussian_noise(grey, 3, sigma=25, quantize="truncate")
            <= deg.add_gaussian_noise(grey, 3, sigma=25, quantize="round") + 1e-7).all()
    np.testing.assert_array_equal(deg.add_gaussian_noise(grey, 3, sigma=0), grey)


@pytest.mark.parametrize("seed", range(4))
def test_low_light_darkens(seed, photo):
    out = deg.low_light(photo, seed)
    assert out.mean() < 0.4 * photo.mean()


def test_low_light_model(photo, grey):
    clean = deg.low_light(photo, 0, exposure=0.2, gamma=1.5, shot_noise=0, read_noise=0)
    np.testing.assert_allclose(clean, 0.2 * photo.astype(np.float64) ** 1.5, atol=1e-6)
    # Poisson-Gaussian variance a*x + b^2 on a flat patch of signal x
    flat = np.full((200, 200, 3), 0.5, np.float32)
    x = 0.25 * 0.5 ** 1.0
    noisy = deg.low_light(flat, 1, exposure=0.25, gamma=1.0, shot_noise=0.004, read_noise=0.01)
    assert abs(noisy.mean() - x) < 2e-3
    assert abs(noisy.var() - (0.004 * x + 0.01 ** 2)) < 0.1 * (0.004 * x + 0.01 ** 2)


# ------------------------------------------------------------------------------------------------------------- rain
def test_rain_screen_blend_properties(photo):
    out = deg.add_rain(photo, 2)
    assert (out >= photo - 1e-6).all()  # screen blending only brightens
    np.testing.assert_allclose(deg.add_rain(photo, 2, intensity=0.0), photo, atol=1e-6)
    np.testing.assert_allclose(deg.add_rain(photo, 2, density=0.0), photo, atol=1e-6)


def test_rain_streaks_follow_the_angle():
    black = np.zeros((128, 128, 3), np.float32)

    def correlation(layer, axis):
        a, b = np.moveaxis(layer, axis, 0)[:-1], np.moveaxis(layer, axis, 0)[1:]
        return np.corrcoef(a.ravel(), b.ravel())[0, 1]

    vertical = deg.add_rain(black, 1, angle=0.0, length=20, density=0.01)[..., 0]
    assert correlation(vertical, 0) > correlation(vertical, 1) + 0.2
    slanted = deg.add_rain(black, 1, angle=80.0, length=20, density=0.01)[..., 0]
    assert correlation(slanted, 1) > correlation(slanted, 0) + 0.2


# ----------------------------------------------------------------------------------------- registry, tensors, errors
def test_degrade_tensor_matches_numpy(photo):
    t = torch.from_numpy(photo).permute(2, 0, 1).double()
    for task in DEGRADATIONS:
        out = deg.degrade_tensor(t, task, 11, {"sigma": 25} if task == "noise" else None)
        assert out.shape == t.shape and out.dtype == torch.float64
        expected = deg.degrade(photo, task, 11, {"sigma": 25} if task == "noise" else None)
        np.testing.assert_allclose(out.permute(1, 2, 0).numpy(), expected, atol=1e-6)


@pytest.mark.parametrize("call, match", [
    (lambda img: deg.degrade(img, "realnoise", 0), "real SIDD"),
    (lambda img: deg.degrade(img, "snow", 0), "choose from"),
    (lambda img: deg.add_rain((img * 255).astype(np.uint8), 0), "uint8"),
    (lambda img: deg.add_rain(img[..., :1], 0), r"\(H,W,3\)"),
    (lambda img: deg.add_rain(img * 3, 0), r"\[0,1\]"),
    (lambda img: deg.add_haze(img, -1), "seed"),
    (lambda img: deg.add_gaussian_noise(img, 0, sigma=300), "sigma=300"),
    (lambda img: deg.low_light(img, 0, gamma=0.5), "gamma"),
    (lambda img: deg.add_gaussian_noise(img, 0, quantize="floor"), "quantize"),
    (lambda img: deg.degrade_tensor(torch.zeros(1, 3, 8, 8), "noise", 0), r"\(3,H,W\)"),
])
def test_bad_inputs(call, match, grey):
    with pytest.raises(DegradationParameterError, match=match):
        call(grey)
