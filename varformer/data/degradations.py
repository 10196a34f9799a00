"""Synthetic degradations for the demo benchmark and for training augmentation, one standard model per task.

Every function takes a float32 numpy image (H, W, 3), RGB in [0, 1], and an integer ``seed``, and returns a new
float32 (H, W, 3) image in [0, 1]. The same seed gives the same output (numpy's PCG64 ``default_rng``). Strength
arguments left as ``None`` are drawn from the seed within the documented default range, so ``fn(img, seed)`` alone is
a random-strength augmentation; all random draws happen in a fixed order whether or not an argument is given, so
fixing one strength does not change the others. Explicit strengths outside the hard limits raise
:class:`DegradationParameterError`.

Models:

* ``rain`` -- :func:`add_rain`: sparse random drops smeared by an oriented line (motion-blur) kernel into a streak
  layer S, combined by screen blending I = 1 - (1 - J)(1 - S) (the streak synthesis used for Rain100/Rain800-style data).
* ``haze`` -- :func:`add_haze`: atmospheric scattering (Koschmieder; RESIDE) I = J t + A (1 - t), t = exp(-beta d),
  with a relative depth d in [0, 1]: a given depth map (e.g. :func:`motorcycle_depth` from the stereo disparity
  shipped with scikit-image), else :func:`smooth_depth_prior`.
* ``blur`` -- :func:`motion_blur`: convolution with a random camera-shake kernel from :func:`random_motion_kernel`
  (Boracchi & Foi 2012 random-walk trajectory with inertia and impulsive jerks, rasterised over the exposure).
* ``lowlight`` -- :func:`low_light`: gamma darkening and exposure scaling, J' = e J^gamma, then Poisson-Gaussian sensor
  noise y = a Poisson(J'/a) + N(0, b^2) (Foi et al. 2008).
* ``noise`` -- :func:`add_gaussian_noise`: additive white Gaussian noise, sigma on the 0-255 scale as benchmarks state it.
"""
from __future__ import annotations

import math
from functools import lru_cache
from typing import Callable, Mapping

import numpy as np
import torch
from scipy import ndimage, signal
from skimage import data as skimage_data

from varformer.errors import VarformerError

__all__ = [
    "DEGRADATIONS", "DegradationParameterError", "add_gaussian_noise", "add_haze", "add_rain", "degrade",
    "degrade_tensor", "low_light", "motion_blur", "motorcycle_depth", "random_motion_kernel", "smooth_depth_prior",
]


class DegradationParameterError(VarformerError, ValueError):
    """A bad image or strength argument given to a degradation."""


# --------------------------------------------------------------------------------------------------------- helpers
def _check_image(img: np.ndarray) -> np.ndarray:
    if not isinstance(img, np.ndarray):
        raise DegradationParameterError(f"expected a numpy float image (H,W,3) in [0,1], got {type(img).__name__}")
    if img.ndim != 3 or img.shape[2] != 3:
        raise DegradationParameterError(f"expected an RGB image of shape (H,W,3), got shape {img.shape}")
    if not np.issubdtype(img.dtype, np.floating):
        raise DegradationParameterError(
            f"expected a float image in [0,1], got dtype {img.dtype} (convert uint8 with img.astype(np.float32)/255)")
    lo, hi = float(img.min()), float(img.max())
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo < -1e-6 or hi > 1 + 1e-6:
        raise DegradationParameterError(f"image values must lie in [0,1], got range [{lo:.4g}, {hi:.4g}]")
    return img.astype(np.float32, copy=False)


def _rng(seed: int) -> np.random.Generator:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise DegradationParameterError(f"seed must be a non-negative int, got {seed!r}")
    return np.random.default_rng(int(seed))


def _strength(name: str, given, draw: float, lo: float, hi: float) -> float:
    """The given strength (checked against the hard limits [lo, hi]) or the value drawn from the seed."""
    if given is None:
        return float(draw)
    if not (lo <= float(given) <= hi):
        raise DegradationParameterError(f"{name}={given!r} is outside the allowed range [{lo}, {hi}]")
    return float(given)


def _finish(x: np.ndarray) -> np.ndarray:
    return np.clip(x, 0.0, 1.0).astype(np.float32, copy=False)


def _rasterise(points_xy: np.ndarray, size: int) -> np.ndarray:
    """Splat equally weighted sub-pixel points (x, y in kernel pixel coordinates) bilinearly; normalised to sum 1."""
    kernel = np.zeros((size, size), np.float64)
    x, y = points_xy[:, 0], points_xy[:, 1]
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    fx, fy = x - x0, y - y0
    for dx, dy, w in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        xi, yi = np.clip(x0 + dx, 0, size - 1), np.clip(y0 + dy, 0, size - 1)
        np.add.at(kernel, (yi, xi), w)
    return kernel / kernel.sum()


def _convolve_image(img_HW3: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """True 2-D convolution of each channel with an odd-sized kernel; borders reflected, output the input's size."""
    r = kernel.shape[0] // 2
    padded = np.pad(img_HW3, ((r, r), (r, r), (0, 0)), mode="reflect")
    return signal.fftconvolve(padded, kernel[:, :, None].astype(np.float32), mode="valid", axes=(0, 1))


# ------------------------------------------------------------------------------------------------------------ rain
def _line_kernel(length: float, angle_deg: float) -> np.ndarray:
    """Anti-aliased straight line of the given length through the centre, angle measured from vertical."""
    size = 2 * int(math.ceil(length / 2)) + 3
    c = (size - 1) / 2
    s = np.linspace(-length / 2, length / 2, max(int(length * 4), 2))
    a = math.radians(angle_deg)
    pts = np.stack([c + s * math.sin(a), c + s * math.cos(a)], axis=1)
    return _rasterise(pts, size)


def add_rain(img: np.ndarray, seed: int, *, density: float | None = None, length: float | None = None,
             angle: float | None = None, intensity: float | None = None) -> np.ndarray:
    """Rain streaks: random drops -> oriented line blur -> streak layer S -> screen blend 1 - (1-J)(1-S).

    Args:
        density: fraction of pixels seeding a drop; default drawn in [0.002, 0.02], allowed [0, 0.2].
        length: streak length in pixels; default drawn in [0.04, 0.12] x min(H, W), allowed [1, min(H, W)].
        angle: streak direction in degrees from vertical; default drawn in [-25, 25], allowed [-80, 80].
        intensity: peak brightness of the streak layer; default drawn in [0.5, 0.9], allowed [0, 1].
    """
    img = _check_image(img)
    rng = _rng(seed)
    H, W, _ = img.shape
    short = min(H, W)
    density = _strength("density", density, rng.uniform(0.002, 0.02), 0.0, 0.2)
    length = _strength("length", length, rng.uniform(0.04, 0.12) * short, 1.0, float(short))
    angle = _strength("angle", angle, rng.uniform(-25, 25), -80.0, 80.0)
    intensity = _strength("intensity", intensity, rng.uniform(0.5, 0.9), 0.0, 1.0)
    drops = (rng.random((H, W)) < density) * rng.uniform(0.4, 1.0, (H, W))
    kernel = _line_kernel(length, angle)
    # The kernel spreads each drop over ~length pixels; scaling by length keeps a streak as bright as its drop.
    streaks = _convolve_image(drops[:, :, None].astype(np.float32), kernel)[:, :, 0] * length
    streaks = ndimage.gaussian_filter(streaks, 0.5)  # soften the one-pixel streak edges
    layer = np.clip(streaks, 0, 1)[:, :, None] * intensity
    return _finish(1.0 - (1.0 - img) * (1.0 - layer))


# ------------------------------------------------------------------------------------------------------------ haze
@lru_cache(maxsize=1)
def _motorcycle_depth_cached() -> np.ndarray:
    _, _, disparity = skimage_data.stereo_motorcycle()
    disp = disparity.astype(np.float64)
    valid = np.isfinite(disp) & (disp > 0)
    # Holes (occlusions, ~7% of pixels) take the disparity of the nearest valid pixel.
    idx = ndimage.distance_transform_edt(~valid, return_distances=False, return_indices=True)
    disp = disp[tuple(idx)]
    depth = disp[valid].min() / disp  # depth ~ 1/disparity, relative to the farthest valid point
    depth = ndimage.gaussian_filter(depth, 2.0)
    return np.clip(depth, 0.0, 1.0).astype(np.float32)


def motorcycle_depth() -> np.ndarray:
    """Relative depth (500, 741) in (0, 1] of scikit-image's ``stereo_motorcycle()`` left image.

    From the shipped disparity: depth is proportional to 1/disparity (normalised so the farthest point is 1),
    occlusion holes filled from the nearest valid pixel, lightly smoothed.
    """
    return _motorcycle_depth_cached().copy()


def smooth_depth_prior(height: int, width: int, seed: int) -> np.ndarray:
    """A generic outdoor depth guess in [0, 1]: growing towards the top of the frame, plus smooth random variation."""
    rng = _rng(seed)
    rows = np.linspace(1.0, 0.0, height)[:, None]  # 1 at the top row (far), 0 at the bottom (near)
    horizon_power = rng.uniform(0.6, 1.6)
    base = np.broadcast_to(0.15 + 0.85 * rows ** horizon_power, (height, width))
    coarse = rng.standard_normal((4, 4))
    variation = ndimage.zoom(coarse, (height / 4, width / 4), order=3, mode="nearest")[:height, :width]
    variation = ndimage.gaussian_filter(variation, max(height, width) / 16)
    variation = variation / (np.abs(variation).max() + 1e-8)
    return np.clip(base + 0.15 * variation, 0.0, 1.0).astype(np.float32)


def add_haze(img: np.ndarray, seed: int, *, depth: np.ndarray | None = None, beta: float | None = None,
             airlight: float | None = None) -> np.ndarray:
    """Atmospheric scattering: I = J t + A (1 - t), t = exp(-beta d); d relative depth (H, W) in [0, 1].

    Args:
        depth: relative depth (0 = at the camera, 1 = farthest), same height and width as the image; default
            :func:`smooth_depth_prior` drawn from the seed. Use :func:`motorcycle_depth` for the motorcycle photo.
        beta: scattering coefficient per unit relative depth; default drawn in [0.8, 2.5], allowed [0, 20].
            (Transmission at the farthest point is exp(-beta): 0.45 to 0.08 by default.)
        airlight: global atmospheric light A (grey); default drawn in [0.75, 1.0], allowed [0, 1].
    """
    img = _check_image(img)
    rng = _rng(seed)
    H, W, _ = img.shape
    beta = _strength("beta", beta, rng.uniform(0.8, 2.5), 0.0, 20.0)
    airlight = _strength("airlight", airlight, rng.uniform(0.75, 1.0), 0.0, 1.0)
    prior_seed = int(rng.integers(0, 2 ** 31 - 1))
    if depth is None:
        depth = smooth_depth_prior(H, W, prior_seed)
    depth = np.asarray(depth, dtype=np.float32)
    if depth.shape != (H, W):
        raise DegradationParameterError(
            f"depth map has shape {depth.shape} but the image is {H}x{W}; crop or resize it like the image")
    if not np.isfinite(depth).all() or depth.min() < 0:
        raise DegradationParameterError("depth map must be finite and non-negative")
    transmission = np.exp(-beta * depth)[:, :, None]  # in (0, 1] since depth >= 0
    return _finish(img * transmission + airlight * (1.0 - transmission))


# ------------------------------------------------------------------------------------------------------------ blur
def random_motion_kernel(seed: int, *, size: int | None = None, anxiety: float | None = None,
                         exposure: float | None = None, n_samples: int = 128) -> np.ndarray:
    """Camera-shake PSF (size, size), non-negative, summing to 1 (Boracchi & Foi 2012 trajectory model).

    A point moves with constant speed; each step its velocity gets a Gaussian shake and a pull back towards the
    start (both scaled by ``anxiety``) and, rarely, an abrupt jerk that reverses it. The PSF is the time the point
    spends at each position during the first ``exposure`` fraction of the trajectory, rasterised sub-pixel.

    Args:
        size: odd kernel side in pixels (the path length is size - 1 before fitting); default drawn from the odd
            numbers in [9, 31], allowed [3, 101].
        anxiety: amount of shake; default drawn in [0.002, 0.04], allowed [0, 1].
        exposure: fraction of the trajectory integrated; default drawn in [0.5, 1], allowed (0, 1].
    """
    rng = _rng(seed)
    size_draw = 2 * int(rng.integers(4, 16)) + 1
    anxiety = _strength("anxiety", anxiety, rng.uniform(0.002, 0.04), 0.0, 1.0)
    exposure = _strength("exposure", exposure, rng.uniform(0.5, 1.0), 1e-6, 1.0)
    size = int(_strength("size", size, size_draw, 3, 101))
    if size % 2 == 0:
        raise DegradationParameterError(f"size must be odd, got {size}")
    centripetal, shake, jerk_prob = rng.uniform(0, 0.7), rng.uniform(0, 10), rng.uniform(0, 0.2)
    step = (size - 1) / (n_samples - 1)
    path = np.zeros(n_samples, np.complex128)
    velocity = step * np.exp(2j * math.pi * rng.random())
    for t in range(n_samples - 1):
        jerk = 0.0
        if rng.random() < jerk_prob * anxiety:
            jerk = 2 * velocity * np.exp(1j * (math.pi + (rng.random() - 0.5)))
        noise = complex(rng.standard_normal(), rng.standard_normal())
        velocity = velocity + jerk + anxiety * (shake * noise - centripetal * path[t]) * step
        velocity = velocity / (abs(velocity) + 1e-12) * step  # constant speed
        path[t + 1] = path[t] + velocity
    path = path[: max(2, int(math.ceil(exposure * n_samples)))]
    # Put the trajectory's centroid at the kernel centre (so blurring does not shift the image against its sharp
    # target) and shrink the trajectory about it if it does not fit.
    path = path - path.mean()
    reach = max(np.abs(path.real).max(), np.abs(path.imag).max(), 1e-12)
    path = path * min(1.0, ((size - 1) / 2 - 0.5) / reach)
    c = (size - 1) / 2
    return _rasterise(np.stack([c + path.real, c + path.imag], axis=1), size).astype(np.float32)


def motion_blur(img: np.ndarray, seed: int, *, size: int | None = None, anxiety: float | None = None,
                exposure: float | None = None) -> np.ndarray:
    """Camera-shake blur: the image convolved with ``random_motion_kernel(seed, size=..., ...)`` (reflected borders).

    Strength arguments as in :func:`random_motion_kernel`; the same seed gives the same kernel.
    """
    img = _check_image(img)
    kernel = random_motion_kernel(seed, size=size, anxiety=anxiety, exposure=exposure)
    return _finish(_convolve_image(img, kernel))


# ------------------------------------------------------------------------------------------------------- low light
def low_light(img: np.ndarray, seed: int, *, exposure: float | None = None, gamma: float | None = None,
              shot_noise: float | None = None, read_noise: float | None = None) -> np.ndarray:
    """Under-exposure: y = a Poisson(e J^gamma / a) + N(0, b^2), clipped to [0, 1].

    Args:
        exposure: scale e; default drawn in [0.08, 0.3], allowed (0, 1].
        gamma: darkening exponent (crushes shadows more than highlights); default drawn in [1.2, 2.0], allowed [1, 4].
        shot_noise: Poisson gain a (signal-dependent variance a * signal); default drawn in [1e-3, 8e-3],
            allowed [0, 0.1]; 0 turns shot noise off.
        read_noise: Gaussian read-noise std b; default drawn in [1e-3, 8e-3], allowed [0, 0.1].
    """
    img = _check_image(img)
    rng = _rng(seed)
    exposure = _strength("exposure", exposure, rng.uniform(0.08, 0.3), 1e-6, 1.0)
    gamma = _strength("gamma", gamma, rng.uniform(1.2, 2.0), 1.0, 4.0)
    shot_noise = _strength("shot_noise", shot_noise, rng.uniform(1e-3, 8e-3), 0.0, 0.1)
    read_noise = _strength("read_noise", read_noise, rng.uniform(1e-3, 8e-3), 0.0, 0.1)
    dark = exposure * np.power(img.astype(np.float64), gamma)
    if shot_noise > 0:
        dark = shot_noise * rng.poisson(dark / shot_noise)
    noisy = dark + read_noise * rng.standard_normal(img.shape)
    return _finish(noisy)


# ----------------------------------------------------------------------------------------------------------- noise
def add_gaussian_noise(img: np.ndarray, seed: int, *, sigma: float | None = None,
                       quantize: str | None = None) -> np.ndarray:
    """Additive white Gaussian noise N(0, (sigma/255)^2) per pixel and channel, clipped to [0, 1].

    Args:
        sigma: standard deviation on the 0-255 scale (benchmarks use 15, 25, 50); default drawn in [5, 50],
            allowed [0, 255].
        quantize: ``None`` keeps floats (Restormer-style, but clipped); ``'round'`` rounds to 8-bit levels;
            ``'truncate'`` floors them, as AirNet/PromptIR's ``astype(uint8)`` does.
    """
    img = _check_image(img)
    rng = _rng(seed)
    sigma = _strength("sigma", sigma, rng.uniform(5, 50), 0.0, 255.0)
    if quantize not in (None, "round", "truncate"):
        raise DegradationParameterError(f"quantize must be None, 'round' or 'truncate', got {quantize!r}")
    noisy = np.clip(img + rng.standard_normal(img.shape, dtype=np.float32) * np.float32(sigma / 255.0), 0, 1)
    if quantize is not None:
        levels = noisy * 255.0
        noisy = (np.round(levels) if quantize == "round" else np.floor(levels)) / 255.0
    return _finish(noisy)


# -------------------------------------------------------------------------------------------------------- registry
DEGRADATIONS: dict[str, Callable[..., np.ndarray]] = {
    "rain": add_rain,
    "haze": add_haze,
    "blur": motion_blur,
    "lowlight": low_light,
    "noise": add_gaussian_noise,
}


def degrade(img: np.ndarray, task: str, seed: int, strength: Mapping[str, object] | None = None) -> np.ndarray:
    """``DEGRADATIONS[task](img, seed, **strength)`` with a clear error for an unknown task."""
    if task not in DEGRADATIONS:
        hint = " ('realnoise' is real SIDD data and has no synthetic model)" if task == "realnoise" else ""
        raise DegradationParameterError(f"unknown degradation {task!r}{hint}; choose from {sorted(DEGRADATIONS)}")
    return DEGRADATIONS[task](img, seed, **dict(strength or {}))


def degrade_tensor(img_3HW: torch.Tensor, task: str, seed: int,
                   strength: Mapping[str, object] | None = None) -> torch.Tensor:
    """Training-augmentation form: a (3, H, W) float tensor in [0, 1] -> the degraded tensor, same dtype and device.

    Runs the numpy model on the CPU (call it in DataLoader workers, seeding per sample, e.g. base_seed + index).
    """
    if not isinstance(img_3HW, torch.Tensor) or img_3HW.ndim != 3 or img_3HW.shape[0] != 3:
        raise DegradationParameterError(
            f"expected a (3,H,W) tensor, got {getattr(img_3HW, 'shape', type(img_3HW).__name__)}")
    if not img_3HW.is_floating_point():
        raise DegradationParameterError(f"expected a float tensor in [0,1], got {img_3HW.dtype}")
    img = img_3HW.detach().to("cpu", torch.float32).permute(1, 2, 0).numpy()
    out = degrade(img, task, seed, strength)
    return torch.from_numpy(np.ascontiguousarray(out)).permute(2, 0, 1).to(img_3HW.device, img_3HW.dtype)
