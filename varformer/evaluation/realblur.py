"""RealBlur's measure as Restormer's ``Motion_Deblurring/evaluate_realblur.py`` computes it (the ``restormer`` preset
on realblur-j / realblur-r; docs/evaluation.md).

RealBlur's sharp and blurred frames come from two cameras, so outputs are first aligned to the ground truth:

1. intensity matching: the output ``z`` is scaled by ``sum(x z) / sum(z z)`` (``x`` the ground truth; all pixels and
   channels, images as float32 in [0, 1] read from the 8-bit files);
2. a homography from OpenCV's ECC (``findTransformECC``, luma of both images, 100 iterations, no epsilon stop,
   Gaussian pre-filter of 5 taps), starting from the identity, maps the scaled output onto the ground truth
   (bicubic, mirrored borders); a nearest-neighbour warp of an all-ones image marks the pixels the warp covers;
3. PSNR over the covered pixels: ``10 log10(1 / (sum((x - z)^2 * mask) / sum(mask)))``, the mask counted over all
   three channels;
4. SSIM per channel as scikit-image's ``structural_similarity(gaussian_weights=True, use_sample_covariance=False,
   data_range=1)`` computes its map (Gaussian sigma 1.5, 11 taps, mirrored borders), the map weighted by the mask,
   a 5-pixel border dropped, each channel's sum divided by its mask's sum, then the mean over channels.

OpenCV is an optional dependency (``pip install -e ".[realblur]"``): ``require_opencv`` says so in one line.
"""
from __future__ import annotations

from typing import Tuple

import numpy as np
from scipy import ndimage

from varformer.errors import ConfigError, DataError

EXTRA = "realblur"
_ECC_ITERATIONS, _ECC_GAUSS_TAPS = 100, 5
_SSIM_SIGMA, _SSIM_RADIUS = 1.5, 5  # scikit-image: radius int(3.5 * sigma + 0.5)
_C1, _C2 = 0.01 ** 2, 0.03 ** 2     # data range 1


def require_opencv(what: str):
    """The ``cv2`` module, or ConfigError naming the optional extra that installs it."""
    try:
        import cv2  # optional dependency: only the RealBlur alignment needs OpenCV
    except ImportError:
        raise ConfigError(f"{what} aligns outputs with OpenCV's ECC (Restormer's evaluate_realblur.py) and OpenCV is "
                          f"not installed: pip install -e \".[{EXTRA}]\" (opencv-python-headless)") from None
    return cv2


def align_to_ground_truth(out_HW3: np.ndarray, gt_HW3: np.ndarray,
                          name: str = "image") -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Steps 1-2 on float32 (H, W, 3) images in [0, 1]: (aligned output, ground truth, mask, 3x3 warp), the first
    two already multiplied by the mask. ``DataError`` if ECC does not converge (the authors' script stops there)."""
    cv2 = require_opencv("the RealBlur measure")
    z, x = out_HW3.astype(np.float32), gt_HW3.astype(np.float32)
    zs = (np.sum(x * z) / np.sum(z * z)) * z
    warp = np.eye(3, dtype=np.float32)
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, _ECC_ITERATIONS, 0)
    try:
        _, warp = cv2.findTransformECC(cv2.cvtColor(x, cv2.COLOR_RGB2GRAY), cv2.cvtColor(zs, cv2.COLOR_RGB2GRAY),
                                       warp, cv2.MOTION_HOMOGRAPHY, criteria, None, _ECC_GAUSS_TAPS)
    except cv2.error as e:
        reason = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise DataError(f"RealBlur alignment (OpenCV ECC) failed on {name}: {reason}") from None
    h, w = x.shape[:2]
    inverse = cv2.WARP_INVERSE_MAP
    zr = cv2.warpPerspective(zs, warp, (w, h), flags=cv2.INTER_CUBIC + inverse, borderMode=cv2.BORDER_REFLECT)
    mask = cv2.warpPerspective(np.ones_like(zs), warp, (w, h), flags=cv2.INTER_NEAREST + inverse,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return zr * mask, x * mask, mask, warp


def masked_psnr(aligned_HW3: np.ndarray, gt_HW3: np.ndarray, mask_HW3: np.ndarray) -> float:
    """Step 3 (peak 1)."""
    err = np.sum((gt_HW3 - aligned_HW3) ** 2, dtype=np.float64) / np.sum(mask_HW3, dtype=np.float64)
    return float(10 * np.log10(1.0 / err)) if err > 0 else float("inf")


def _gaussian_reflect(x_HW: np.ndarray) -> np.ndarray:
    r = np.arange(-_SSIM_RADIUS, _SSIM_RADIUS + 1, dtype=np.float64)
    taps = np.exp(-0.5 * (r / _SSIM_SIGMA) ** 2)
    taps /= taps.sum()
    for axis in (0, 1):  # scipy's "reflect" is the half-sample mirror scikit-image uses
        x_HW = ndimage.correlate1d(x_HW, taps, axis=axis, mode="reflect")
    return x_HW


def masked_ssim(aligned_HW3: np.ndarray, gt_HW3: np.ndarray, mask_HW3: np.ndarray) -> float:
    """Step 4, in float64."""
    per_channel = []
    for c in range(gt_HW3.shape[2]):
        a, b = gt_HW3[..., c].astype(np.float64), aligned_HW3[..., c].astype(np.float64)
        mu_a, mu_b = _gaussian_reflect(a), _gaussian_reflect(b)
        var_a = _gaussian_reflect(a * a) - mu_a * mu_a
        var_b = _gaussian_reflect(b * b) - mu_b * mu_b
        cov = _gaussian_reflect(a * b) - mu_a * mu_b
        ssim_map = ((2 * mu_a * mu_b + _C1) * (2 * cov + _C2)) / ((mu_a ** 2 + mu_b ** 2 + _C1) * (var_a + var_b + _C2))
        inner = (slice(_SSIM_RADIUS, -_SSIM_RADIUS), slice(_SSIM_RADIUS, -_SSIM_RADIUS))
        m = mask_HW3[..., c].astype(np.float64)[inner]
        per_channel.append((ssim_map[inner] * m).sum() / m.sum())
    return float(np.mean(per_channel))


def realblur_psnr_ssim(out_HW3_uint8: np.ndarray, gt_HW3_uint8: np.ndarray, name: str = "image") -> Tuple[float, float]:
    """(PSNR, SSIM) of one 8-bit RGB output against its 8-bit RGB ground truth, as described in the module doc."""
    for label, img in (("output", out_HW3_uint8), ("ground truth", gt_HW3_uint8)):
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            raise DataError(f"RealBlur measure of {name}: the {label} must be 8-bit RGB (H, W, 3), "
                            f"got {img.dtype} {img.shape}")
    if out_HW3_uint8.shape != gt_HW3_uint8.shape:
        raise DataError(f"RealBlur measure of {name}: output {out_HW3_uint8.shape} and ground truth "
                        f"{gt_HW3_uint8.shape} differ in size")
    aligned, gt, mask, _ = align_to_ground_truth(out_HW3_uint8.astype(np.float32) / 255.0,
                                                 gt_HW3_uint8.astype(np.float32) / 255.0, name)
    return masked_psnr(aligned, gt, mask), masked_ssim(aligned, gt, mask)
