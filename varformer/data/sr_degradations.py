"""Real-world super-resolution training pairs from clean images: the first-order degradation model of DiffBIR /
CodeFormer that VARestorer's release names for its dataset (docs/varestorer.md, "Training (reconstructed)"),
written here from its description, in numpy / torch / PIL (no OpenCV).

Order and ranges (the release's, all drawn per sample from one generator, in this order)::

    kernel:     'iso' or 'aniso' with probability 0.5 each; a 41 x 41 bivariate Gaussian, sigma_x (and for
                'aniso' sigma_y and a rotation theta in [-pi, pi]) uniform in [0.1, 12]; 'iso': sigma_y = sigma_x,
                theta = 0; normalised to sum 1
    blur:       2-D correlation of each channel with the kernel, borders mirrored without repeating the edge
                (OpenCV ``filter2D``'s default ``BORDER_REFLECT_101``)
    downsample: scale s ~ U[1, 12]; size (floor(w / s), floor(h / s)), bilinear with half-pixel centres and no
                antialiasing (OpenCV ``resize`` ``INTER_LINEAR`` on float images)
    noise:      sigma ~ U[0, 15] on the 0-255 scale, i.i.d. N(0, (sigma/255)^2) per pixel and channel, clipped to
                [0, 1]
    JPEG:       quality ~ U[30, 100], truncated to an integer; 8-bit (rounded) image encoded and decoded by Pillow
                (libjpeg, 4:2:0 chroma as OpenCV's default)
    resize:     back to the input size, bilinear as above

    s = SRDegradationSettings()                       # the release's ranges
    lq, p = degrade_sr(gt_HW3, np.random.default_rng(0), s)   # p: the drawn values (kernel, sigmas, scale, ...)

Images are float32 (H, W, 3) RGB in [0, 1]; the LQ has the GT's size.
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass, field, fields
from typing import Dict, List, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from scipy import signal

from varformer.errors import ConfigError, DataError

KERNEL_TYPES = ("iso", "aniso")


@dataclass
class SRDegradationSettings:
    """The degradation model's ranges; the defaults are those of VARestorer's release (DiffBIR's first order)."""
    kernel_size: int = 41                     # odd
    kernel_types: List[str] = field(default_factory=lambda: ["iso", "aniso"])
    kernel_probs: List[float] = field(default_factory=lambda: [0.5, 0.5])
    blur_sigma: List[float] = field(default_factory=lambda: [0.1, 12.0])
    downsample: List[float] = field(default_factory=lambda: [1.0, 12.0])
    noise_sigma: List[float] = field(default_factory=lambda: [0.0, 15.0])     # on the 0-255 scale
    jpeg_quality: List[float] = field(default_factory=lambda: [30.0, 100.0])

    def validate(self) -> "SRDegradationSettings":
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ConfigError(f"degradation kernel_size must be a positive odd number, got {self.kernel_size}")
        unknown = [t for t in self.kernel_types if t not in KERNEL_TYPES]
        if unknown or not self.kernel_types:
            raise ConfigError(f"degradation kernel_types must be among {KERNEL_TYPES}, got {list(self.kernel_types)}")
        probs = list(self.kernel_probs)
        if len(probs) != len(self.kernel_types) or any(p < 0 for p in probs) or not math.isclose(sum(probs), 1.0):
            raise ConfigError(f"degradation kernel_probs {probs} must be one probability per kernel type "
                              f"{list(self.kernel_types)}, summing to 1")
        for name, lo_min, hi_max in (("blur_sigma", 1e-6, math.inf), ("downsample", 1.0, math.inf),
                                     ("noise_sigma", 0.0, 255.0), ("jpeg_quality", 1.0, 100.0)):
            r = list(getattr(self, name))
            if len(r) != 2 or not lo_min <= r[0] <= r[1] <= hi_max:
                raise ConfigError(f"degradation {name} must be a range [low, high] with {lo_min:g} <= low <= high"
                                  f"{'' if hi_max == math.inf else f' <= {hi_max:g}'}, got {r}")
        return self


# --------------------------------------------------------------------------------------------------------- kernels
def bivariate_gaussian_kernel(size: int, sigma_x: float, sigma_y: float, theta: float) -> np.ndarray:
    """(size, size) float32 kernel ``exp(-0.5 p^T C^-1 p)`` over the integer offsets p = (x, y) from the centre,
    ``C = R(theta) diag(sigma_x^2, sigma_y^2) R(theta)^T``, normalised to sum 1 (x runs along columns)."""
    c, s = math.cos(theta), math.sin(theta)
    rot = np.array([[c, -s], [s, c]])
    cov = rot @ np.diag([sigma_x ** 2, sigma_y ** 2]) @ rot.T
    inv = np.linalg.inv(cov)
    ax = np.arange(size, dtype=np.float64) - size // 2
    xx, yy = np.meshgrid(ax, ax)
    pts = np.stack([xx, yy], axis=-1)                                   # (size, size, 2): (x, y)
    k = np.exp(-0.5 * np.einsum("...i,ij,...j->...", pts, inv, pts))
    return (k / k.sum()).astype(np.float32)


def random_mixed_kernel(rng: np.random.Generator, s: SRDegradationSettings) -> Tuple[np.ndarray, Dict[str, object]]:
    """A kernel of a random type (by ``kernel_probs``) and its drawn values."""
    kind = str(s.kernel_types[int(rng.choice(len(s.kernel_types), p=np.asarray(s.kernel_probs, float)))])
    sigma_x = float(rng.uniform(*s.blur_sigma))
    if kind == "iso":
        sigma_y, theta = sigma_x, 0.0
    else:
        sigma_y = float(rng.uniform(*s.blur_sigma))
        theta = float(rng.uniform(-math.pi, math.pi))
    kernel = bivariate_gaussian_kernel(s.kernel_size, sigma_x, sigma_y, theta)
    return kernel, {"kernel": kind, "sigma_x": sigma_x, "sigma_y": sigma_y, "theta": theta}


# ------------------------------------------------------------------------------------------------------ operations
def filter2d_reflect101(img_HW3: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Correlation of each channel with an odd kernel, output the input's size, borders mirrored without the edge
    pixel (``np.pad(mode='reflect')`` = OpenCV ``BORDER_REFLECT_101``)."""
    r = kernel.shape[0] // 2
    padded = np.pad(np.asarray(img_HW3, dtype=np.float32), ((r, r), (r, r), (0, 0)), mode="reflect")
    # correlation = convolution with the flipped kernel; FFT: ~12x faster than a direct 41x41 filter at 512 px
    out = signal.fftconvolve(padded, kernel[::-1, ::-1, None].astype(np.float32), mode="valid", axes=(0, 1))
    return out.astype(np.float32)


def resize_linear(img_HW3: np.ndarray, width: int, height: int) -> np.ndarray:
    """Bilinear resize to (width, height): half-pixel centres, border clamp, no antialiasing (OpenCV
    ``INTER_LINEAR`` on float images)."""
    if width < 1 or height < 1:
        raise DataError(f"cannot resize a {img_HW3.shape[1]}x{img_HW3.shape[0]} image to {width}x{height}")
    if img_HW3.shape[:2] == (height, width):
        return img_HW3.astype(np.float32, copy=True)
    x = torch.from_numpy(np.ascontiguousarray(img_HW3.transpose(2, 0, 1), dtype=np.float32))[None]
    y = F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False, antialias=False)
    return y[0].numpy().transpose(1, 2, 0)


def add_gaussian_noise(img_HW3: np.ndarray, sigma255: float, rng: np.random.Generator) -> np.ndarray:
    noise = rng.standard_normal(img_HW3.shape).astype(np.float32) * np.float32(sigma255 / 255.0)
    return np.clip(img_HW3 + noise, 0.0, 1.0).astype(np.float32)


def jpeg_roundtrip(img_HW3: np.ndarray, quality: int) -> np.ndarray:
    """Encode the 8-bit image (values rounded) as a JPEG of ``quality`` and decode it (Pillow)."""
    u8 = np.clip(np.rint(np.clip(img_HW3, 0, 1) * 255.0), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(u8).save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    with Image.open(buf) as im:
        return np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0


# -------------------------------------------------------------------------------------------------------- pipeline
def degrade_sr(gt_HW3: np.ndarray, rng: np.random.Generator, s: SRDegradationSettings
               ) -> Tuple[np.ndarray, Dict[str, object]]:
    """(LQ of the GT's size, the drawn values) by blur -> downsample -> noise -> JPEG -> resize back."""
    if gt_HW3.ndim != 3 or gt_HW3.shape[2] != 3 or not np.issubdtype(gt_HW3.dtype, np.floating):
        raise DataError(f"expected a float (H, W, 3) image in [0, 1], got {gt_HW3.dtype} {gt_HW3.shape}")
    h, w = gt_HW3.shape[:2]
    kernel, params = random_mixed_kernel(rng, s)
    x = filter2d_reflect101(gt_HW3, kernel)
    scale = float(rng.uniform(*s.downsample))
    small_w, small_h = max(int(w // scale), 1), max(int(h // scale), 1)
    x = resize_linear(x, small_w, small_h)
    sigma = float(rng.uniform(*s.noise_sigma))
    x = add_gaussian_noise(x, sigma, rng)
    quality = int(rng.uniform(*s.jpeg_quality))
    x = jpeg_roundtrip(x, quality)
    x = resize_linear(x, w, h)
    params.update(scale=scale, small_size=(small_w, small_h), noise_sigma=sigma, jpeg_quality=quality)
    return np.clip(x, 0.0, 1.0).astype(np.float32), params


def settings_from(section) -> SRDegradationSettings:
    """Validated settings from a config section holding the same fields (or from settings themselves)."""
    if isinstance(section, SRDegradationSettings):
        return section.validate()
    values = {}
    for f in fields(SRDegradationSettings):
        v = getattr(section, f.name)
        values[f.name] = int(v) if f.name == "kernel_size" else list(v)
    return SRDegradationSettings(**values).validate()
