"""Full-reference image metrics: PSNR, SSIM (BasicSR / MATLAB convention by default) and LPIPS.

Inputs (both arguments of the same kind):

* uint8 numpy arrays, RGB, ``(H, W, 3)`` for one image or ``(B, H, W, 3)`` for a batch (``C = 1`` is accepted too);
* torch tensors ``(B, 3, H, W)``: float in [0, 1] (quantised to 8 bits first, see ``quantize``) or uint8.

Return: a Python ``float`` for a single ``(H, W, C)`` numpy image, a float64 numpy array ``(B,)`` for a numpy batch,
a float64 tensor ``(B,)`` on the input's device for tensors. All forms give the same numbers for the same pixels.

Default convention (what BasicSR's ``calculate_psnr`` / ``calculate_ssim`` and Wang et al.'s MATLAB ``ssim_index``
compute, and what the official VarFormer validation uses):

* ``quantize=True``: float inputs are clamped to [0, 1], scaled by 255 and rounded (half to even, as numpy/BasicSR's
  ``tensor2img``) -- the numbers a saved 8-bit PNG would give. ``quantize=False`` measures the float values as
  given (clamped to [0, 1], so the peak is still 1.0 = 255), which is the AirNet/PromptIR "PSNR on float outputs".
  ``quantize='float32'`` rounds ``x * 255`` computed in float32, not float64, which is what the authors' scripts
  save: scikit-image's ``img_as_ubyte`` (Restormer) and BasicSR's ``tensor2img`` (DiffUIR) on float32 outputs. The
  two differ on about one pixel in 10^5 (a product within float32 precision of a .5 tie).
* PSNR on the 0-255 scale, MSE over all channels of an image in float64; identical images give ``inf``
  (returned as ``math.inf``, never a division warning or an arbitrary cap such as 100 dB).
* SSIM: 11x11 Gaussian window, sigma 1.5, K1 = 0.01, K2 = 0.03, L = 255, "valid" region only (no padding), the SSIM
  map averaged per channel, then averaged over channels. Identical images give exactly 1.
* ``y_channel=True`` with ``luma='matlab'``: Y of MATLAB's ``rgb2ycbcr`` (ITU-R BT.601 limited range,
  Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255 on the 0-255 scale), not rounded (BasicSR's ``bgr2ycbcr``, and
  MATLAB's on double images).
* ``crop_border=n`` drops n pixels from every edge before measuring.

Other conventions in use (docs/evaluation.md), as explicit options:

* ``luma='matlab_uint8'``: MATLAB's ``rgb2ycbcr`` on a uint8 image returns uint8, so Y is rounded (half away from
  zero) before PSNR and SSIM: the ``.m`` scripts of Restormer (deraining) and DiffUIR (SOTS) measure that. Computed
  in float64 as MATLAB's ``imlincomb`` documents it, ``(65.481 * (1/255)) R + (128.553 * (1/255)) G +
  (24.966 * (1/255)) B + 16``, then rounded. Needs 8-bit images (``quantize=True`` or uint8 inputs).
  ``gray_skips_luma=True`` adds those scripts' other rule: an image with one channel is measured as it is, without
  the conversion (so a (B, 3, H, W) prediction may be compared with a (B, 1, H, W) target).
* ``luma='full_range'``: Y = 0.299 R + 0.587 G + 0.114 B (YIQ / BT.601 full range; pyiqa's default, PIL's YCbCr).
  PSNR on it is about 20*log10(255/219) = 1.32 dB lower than on MATLAB's Y.
* ``ssim_mode='replicate'``: the Gaussian filter with replicate-padded borders, SSIM averaged over the whole map
  (DiffUIR and the BasicSR fork shipped by Restormer). On one channel (Y) a 2-D 11x11 Gaussian; on RGB the fork's
  3-D 11x11x11 Gaussian over (H, W, C), replicate-padded along all three axes. This is MATLAB's built-in ``ssim``
  (Restormer's GoPro/HIDE and SIDD scores): it treats an RGB array as a 3-D volume, filters it with a Gaussian of
  sigma 1.5 and 2*ceil(3*1.5)+1 = 11 taps per axis, replicate padding, and averages the whole map.
* ``ssim_mode='skimage_default'``: scikit-image's ``structural_similarity`` defaults (7x7 uniform window, sample
  covariance N/(N-1), valid region, per-channel mean) -- AirNet, PromptIR, AdaIR, RestoreVAR.
"""
from __future__ import annotations

import math
import os
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Literal, Union

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from varformer.errors import CheckpointMismatchError, VarformerError, WeightsNotFoundError
from varformer.files import read_state_dict

ImageInput = Union[np.ndarray, torch.Tensor]
Luma = Literal["matlab", "matlab_uint8", "full_range"]
SsimMode = Literal["basicsr", "replicate", "skimage_default"]
Quantize = Union[bool, Literal["float32"]]

LUMA_OPTIONS = ("matlab", "matlab_uint8", "full_range")
SSIM_MODES = ("basicsr", "replicate", "skimage_default")

# Y coefficients for R, G, B on the 0-255 scale, and the offset.
_LUMA_COEFFS = {
    "matlab": ((65.481 / 255.0, 128.553 / 255.0, 24.966 / 255.0), 16.0),
    # MATLAB's rgb2ycbcr on uint8 scales its matrix by the double 1/255 (imlincomb's coefficients)
    "matlab_uint8": ((65.481 * (1 / 255.0), 128.553 * (1 / 255.0), 24.966 * (1 / 255.0)), 16.0),
    "full_range": ((0.299, 0.587, 0.114), 0.0),
}
_PEAK = 255.0
_GAUSS_SIZE, _GAUSS_SIGMA = 11, 1.5
_UNIFORM_SIZE = 7
# Working-set target of one SSIM chunk, per device type: on CPU a chunk that stays in cache is several times
# faster than a large batch; GPUs want big batches. Intermediates are a few times this size.
_SSIM_CHUNK_BYTES = {"cpu": 8 * 2 ** 20, "cuda": 512 * 2 ** 20}
_CPU_BACKEND = "numpy"  # "torch" runs the GPU code path on CPU (tests compare the two)


class MetricInputError(VarformerError, ValueError):
    """Metric inputs that cannot be compared: different shapes, wrong dtype or layout, non-finite values."""


# ----------------------------------------------------------------------------------------------------- input handling
def _to_float255_BCHW(x: ImageInput, name: str, quantize: Quantize):
    """Any accepted input -> float64 (B, C, H, W) on the 0-255 scale: a numpy array for numpy and CPU-tensor inputs
    (see the note on backends above :func:`_stack`), a tensor on the input's device otherwise."""
    if isinstance(x, np.ndarray):
        if x.dtype != np.uint8:
            raise MetricInputError(
                f"{name}: numpy images must be uint8 (0-255) HWC, got dtype {x.dtype} shape {x.shape}; "
                "pass float images as a (B,3,H,W) torch tensor in [0, 1]")
        if x.ndim == 2:
            x = x[:, :, None]
        if x.ndim == 3:
            x = x[None]
        if x.ndim != 4 or x.shape[-1] not in (1, 3):
            raise MetricInputError(f"{name}: expected a uint8 array (H,W,3) or (B,H,W,3), got shape {x.shape}")
        out = np.ascontiguousarray(x.transpose(0, 3, 1, 2), dtype=np.float64)
        return out if _CPU_BACKEND == "numpy" else torch.from_numpy(out)
    if not isinstance(x, torch.Tensor):
        raise MetricInputError(f"{name}: expected a numpy uint8 array or a torch tensor, got {type(x).__name__}")
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise MetricInputError(
            f"{name}: expected a tensor (B,3,H,W), got shape {tuple(x.shape)}"
            + (" (add a batch dimension with x[None])" if x.ndim == 3 else ""))
    if x.dtype != torch.uint8 and not x.is_floating_point():
        raise MetricInputError(f"{name}: tensor must be float in [0, 1] or uint8, got {x.dtype}")
    x = x.detach()
    if x.device.type == "cpu" and _CPU_BACKEND == "numpy":
        arr = (x if x.dtype in (torch.uint8, torch.float32, torch.float64) else x.float()).numpy()
        if x.dtype == torch.uint8:
            return arr.astype(np.float64)
        if not np.isfinite(arr).all():
            raise MetricInputError(f"{name}: tensor contains NaN or inf values")
        if quantize == "float32":  # x * 255 rounded to float32 first, as the authors' scripts compute it
            return np.round(np.clip(arr.astype(np.float32), 0.0, 1.0) * np.float32(_PEAK)).astype(np.float64)
        arr = np.clip(arr.astype(np.float64), 0.0, 1.0) * _PEAK
        return np.round(arr) if quantize else arr  # half to even, like torch.round and BasicSR's tensor2img
    if x.dtype == torch.uint8:
        return x.to(torch.float64)
    if not bool(torch.isfinite(x).all()):
        raise MetricInputError(f"{name}: tensor contains NaN or inf values")
    if quantize == "float32":
        return torch.round(x.float().clamp(0.0, 1.0) * _PEAK).to(torch.float64)
    x = x.to(torch.float64).clamp(0.0, 1.0) * _PEAK
    return torch.round(x) if quantize else x


def _prepare(pred: ImageInput, target: ImageInput, *, crop_border: int, y_channel: bool, luma: str,
             quantize: Quantize, gray_skips_luma: bool = False):
    """Checks, converts, crops and (optionally) takes luma. Returns two float64 (B, C, H, W) arrays/tensors, 0-255."""
    if isinstance(pred, np.ndarray) != isinstance(target, np.ndarray):
        raise MetricInputError(
            f"pred and target must both be numpy arrays or both tensors, got {type(pred).__name__} "
            f"and {type(target).__name__}")
    mixed_channels = y_channel and gray_skips_luma  # a 3-channel image may meet a 1-channel one
    if tuple(pred.shape) != tuple(target.shape) and not mixed_channels:
        raise MetricInputError(
            f"pred and target differ in shape: pred {tuple(pred.shape)} vs target {tuple(target.shape)}")
    if luma not in LUMA_OPTIONS:
        raise MetricInputError(f"luma must be one of {LUMA_OPTIONS}, got {luma!r}")
    if quantize not in (True, False, "float32"):
        raise MetricInputError(f"quantize must be True, False or 'float32', got {quantize!r}")
    if not isinstance(crop_border, (int, np.integer)) or crop_border < 0:
        raise MetricInputError(f"crop_border must be a non-negative int, got {crop_border!r}")
    if y_channel and luma == "matlab_uint8" and not quantize and any(
            isinstance(x, torch.Tensor) and x.is_floating_point() for x in (pred, target)):
        raise MetricInputError("luma='matlab_uint8' is MATLAB's rgb2ycbcr on uint8 images: it needs 8-bit inputs "
                               "(quantize=True or uint8 arrays)")
    if isinstance(pred, torch.Tensor) and isinstance(target, torch.Tensor) and target.device != pred.device:
        target = target.to(pred.device)
    a = _to_float255_BCHW(pred, "pred", quantize)
    b = _to_float255_BCHW(target, "target", quantize)
    if mixed_channels and (a.shape[0], *a.shape[2:]) != (b.shape[0], *b.shape[2:]):
        raise MetricInputError(
            f"pred and target differ in size: pred {tuple(pred.shape)} vs target {tuple(target.shape)}")
    H, W = a.shape[-2:]
    if 2 * crop_border >= min(H, W):
        raise MetricInputError(f"crop_border={crop_border} leaves nothing of an image of size {H}x{W}")
    if crop_border:
        a = a[..., crop_border:-crop_border, crop_border:-crop_border]
        b = b[..., crop_border:-crop_border, crop_border:-crop_border]
    if y_channel:
        for x in (a, b):
            if x.shape[1] != 3 and not (gray_skips_luma and x.shape[1] == 1):
                raise MetricInputError(f"y_channel=True needs RGB images, got {x.shape[1]} channel(s)")
        a = rgb_to_luma(a, luma) if a.shape[1] == 3 else a
        b = rgb_to_luma(b, luma) if b.shape[1] == 3 else b
    return a, b


def _finish(values_B, like: ImageInput):
    """Return type rule: float for one HWC numpy image, numpy (B,) for a numpy batch, tensor (B,) on the input's
    device for tensors."""
    if isinstance(like, np.ndarray):
        arr = values_B if isinstance(values_B, np.ndarray) else values_B.cpu().numpy()
        return float(arr[0]) if like.ndim in (2, 3) else arr
    if isinstance(values_B, np.ndarray):
        values_B = torch.from_numpy(values_B)
    return values_B.to(like.device)


def rgb_to_luma(x_B3HW, luma: str = "matlab"):
    """RGB (B, 3, H, W) on the 0-255 scale (array or tensor) -> luma (B, 1, H, W), 0-255; rounded only for
    ``luma='matlab_uint8'`` (half away from zero, as MATLAB's ``round``; the RGB values must be integers)."""
    (cr, cg, cb), offset = _LUMA_COEFFS[luma]
    if luma != "matlab_uint8":
        return offset + cr * x_B3HW[:, 0:1] + cg * x_B3HW[:, 1:2] + cb * x_B3HW[:, 2:3]
    y = cr * x_B3HW[:, 0:1] + cg * x_B3HW[:, 1:2] + cb * x_B3HW[:, 2:3] + offset  # imlincomb's order
    floor = np.floor(y) if isinstance(y, np.ndarray) else torch.floor(y)
    return floor + ((y - floor) >= 0.5)  # exact for y >= 1 (Y is in [16, 235]); floor(y + 0.5) is not


# --------------------------------------------------------------------------------------------------------------- PSNR
def psnr(pred: ImageInput, target: ImageInput, *, crop_border: int = 0, y_channel: bool = False,
         luma: Luma = "matlab", quantize: Quantize = True, gray_skips_luma: bool = False):
    """Peak signal-to-noise ratio in dB on the 0-255 scale (module docstring: inputs, return type, conventions).

    Identical images (MSE = 0) give ``math.inf``; averaging code should decide explicitly how to treat it.
    """
    a, b = _prepare(pred, target, crop_border=crop_border, y_channel=y_channel, luma=luma, quantize=quantize,
                    gray_skips_luma=gray_skips_luma)
    diff = a - b
    mse_B = (diff * diff).mean(axis=(1, 2, 3))
    if isinstance(mse_B, np.ndarray):
        with np.errstate(divide="ignore"):  # mse 0 -> inf, on purpose
            psnr_B = 10.0 * np.log10(_PEAK ** 2 / mse_B)
    else:
        psnr_B = 10.0 * torch.log10(_PEAK ** 2 / mse_B.clamp_min(1e-300))
        psnr_B = torch.where(mse_B == 0, torch.full_like(psnr_B, math.inf), psnr_B)
    return _finish(psnr_B, pred)


# --------------------------------------------------------------------------------------------------------------- SSIM
@lru_cache(maxsize=8)
def _gaussian_taps(size: int, sigma: float) -> np.ndarray:
    """Normalised 1-D Gaussian (what cv2.getGaussianKernel(11, 1.5) gives); the 2-D window is its outer product."""
    r = np.arange(size, dtype=np.float64) - (size - 1) / 2
    g = np.exp(-(r ** 2) / (2 * sigma ** 2))
    g = g / g.sum()
    g.flags.writeable = False  # cached and shared
    return g


# The SSIM core runs on numpy arrays for CPU inputs and on torch tensors otherwise. On CPU, numpy/scipy is as fast
# as torch on an idle machine and ~30x faster when the cores are oversubscribed (torch's OpenMP threads wait at a
# barrier after each of the many small filter steps). The helpers below are the only backend-specific code.
def _stack(parts, axis: int):
    return np.stack(parts, axis=axis) if isinstance(parts[0], np.ndarray) else torch.stack(parts, dim=axis)


def _pad_replicate(x, r: int, n_dims: int):
    """Replicate (edge) padding by r on the last n_dims axes."""
    if isinstance(x, np.ndarray):
        return np.pad(x, [(0, 0)] * (x.ndim - n_dims) + [(r, r)] * n_dims, mode="edge")
    lead, spatial = x.shape[:-n_dims], x.shape[-n_dims:]
    padded = F.pad(x.reshape(1, -1, *spatial), (r, r) * n_dims, mode="replicate")  # F.pad wants (N, C, *spatial)
    return padded.reshape(*lead, *padded.shape[-n_dims:])


def _correlate_valid(x, taps: np.ndarray, axis: int):
    """'Valid' 1-D correlation of x with taps along axis (output shorter by len(taps) - 1), float64."""
    k = taps.size
    n = x.shape[axis] - k + 1
    if isinstance(x, np.ndarray):
        full = ndimage.correlate1d(x, taps, axis=axis, mode="constant")  # centred: odd k
        valid = [slice(None)] * x.ndim
        valid[axis] = slice(k // 2, k // 2 + n)
        return full[tuple(valid)]
    # torch: a sum of shifted slices; much faster than a depthwise float64 conv2d and as exact
    out = x.narrow(axis, 0, n) * float(taps[0])
    for i in range(1, k):
        out.add_(x.narrow(axis, i, n), alpha=float(taps[i]))
    return out


def _separable_filter(x, taps: np.ndarray, axes: tuple[int, ...]):
    """'Valid' correlation with the separable window taps x taps (x taps) over the given axes."""
    for axis in axes:
        x = _correlate_valid(x, taps, axis)
    return x


def _ssim_from_moments(mu_a, mu_b, m_aa, m_bb, m_ab, *, cov_norm: float = 1.0):
    """The SSIM map from local means and second moments (Wang et al. 2004, exponents 1, C3 = C2/2)."""
    c1, c2 = (0.01 * _PEAK) ** 2, (0.03 * _PEAK) ** 2
    mu_ab, mu_aa, mu_bb = mu_a * mu_b, mu_a * mu_a, mu_b * mu_b
    num = (2 * mu_ab + c1) * (2 * cov_norm * (m_ab - mu_ab) + c2)
    den = (mu_aa + mu_bb + c1) * (cov_norm * ((m_aa - mu_aa) + (m_bb - mu_bb)) + c2)
    return num / den


def _ssim_per_image(a, b, mode: str):
    """a, b: float64 (B, C, H, W) on 0-255, numpy arrays or tensors -> SSIM (B,) of the same kind."""
    B, C, H, W = a.shape
    stack = _stack([a, b, a * a, b * b, a * b], axis=1)  # (B, 5, C, H, W)
    r = _GAUSS_SIZE // 2
    if mode == "replicate" and C > 1:
        # 3-D Gaussian over (C, H, W), borders replicated on all three axes, mean over the whole map.
        moments = _separable_filter(_pad_replicate(stack, r, 3), _gaussian_taps(_GAUSS_SIZE, _GAUSS_SIGMA), (2, 3, 4))
        return _ssim_from_moments(*(moments[:, i] for i in range(5))).mean(axis=(1, 2, 3))

    if mode == "skimage_default":
        n = _UNIFORM_SIZE ** 2
        taps, cov_norm = np.full(_UNIFORM_SIZE, 1.0 / _UNIFORM_SIZE), n / (n - 1)
    else:
        taps, cov_norm = _gaussian_taps(_GAUSS_SIZE, _GAUSS_SIGMA), 1.0
    if mode == "replicate":
        stack = _pad_replicate(stack, r, 2)
    elif min(H, W) < taps.size:
        raise MetricInputError(
            f"SSIM ({mode}) needs images of at least {taps.size}x{taps.size} after cropping, got {H}x{W}")
    moments = _separable_filter(stack, taps, (3, 4))
    ssim_map = _ssim_from_moments(*(moments[:, i] for i in range(5)), cov_norm=cov_norm)  # (B, C, h, w)
    return ssim_map.mean(axis=(2, 3)).mean(axis=1)


def ssim(pred: ImageInput, target: ImageInput, *, crop_border: int = 0, y_channel: bool = False,
         luma: Luma = "matlab", quantize: Quantize = True, ssim_mode: SsimMode = "basicsr",
         gray_skips_luma: bool = False):
    """Structural similarity (module docstring: inputs, return type, conventions, ``ssim_mode`` variants).

    Identical images give 1.0. Batches are processed a few images at a time to bound memory.
    """
    if ssim_mode not in SSIM_MODES:
        raise MetricInputError(f"ssim_mode must be one of {SSIM_MODES}, got {ssim_mode!r}")
    a, b = _prepare(pred, target, crop_border=crop_border, y_channel=y_channel, luma=luma, quantize=quantize,
                    gray_skips_luma=gray_skips_luma)
    B, C, H, W = a.shape
    depth = C + 2 * (_GAUSS_SIZE // 2) if (ssim_mode == "replicate" and C > 1) else C
    bytes_per_image = 5 * depth * (H + _GAUSS_SIZE) * (W + _GAUSS_SIZE) * 8
    budget = _SSIM_CHUNK_BYTES["cpu"] if isinstance(a, np.ndarray) else _SSIM_CHUNK_BYTES.get(
        a.device.type, _SSIM_CHUNK_BYTES["cuda"])
    chunk = max(1, budget // bytes_per_image)
    values = [_ssim_per_image(a[i:i + chunk], b[i:i + chunk], ssim_mode) for i in range(0, B, chunk)]
    values_B = np.concatenate(values) if isinstance(a, np.ndarray) else torch.cat(values)
    return _finish(values_B, pred)


# -------------------------------------------------------------------------------------------------------------- LPIPS
ALEXNET_FILE = "alexnet-owt-7be5be79.pth"
ALEXNET_URL = "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"
REPO_CHECKPOINTS_DIR = Path(__file__).resolve().parent.parent / "checkpoints"


def alexnet_search_paths() -> list[Path]:
    """Where the LPIPS backbone is looked for, in order: ./checkpoints, the repo's checkpoints/, torch's hub cache."""
    hub = Path(torch.hub.get_dir()) / "checkpoints"
    paths = [Path.cwd() / "checkpoints" / ALEXNET_FILE, REPO_CHECKPOINTS_DIR / ALEXNET_FILE, hub / ALEXNET_FILE]
    return list(dict.fromkeys(paths))  # de-duplicate, keep order


def find_alexnet_weights(weights_path: str | os.PathLike | None = None) -> Path:
    """The AlexNet weight file for LPIPS, or WeightsNotFoundError saying what to download and where to put it."""
    candidates = [Path(weights_path)] if weights_path is not None else alexnet_search_paths()
    for path in candidates:
        if path.is_file():
            return path
    looked = "\n  ".join(str(p) for p in candidates)
    raise WeightsNotFoundError(
        f"LPIPS needs torchvision's AlexNet weights '{ALEXNET_FILE}' and none was found. Looked in:\n  {looked}\n"
        f"Download {ALEXNET_URL} and put it in checkpoints/ (or in torch's hub cache "
        f"{Path(torch.hub.get_dir()) / 'checkpoints'}).")


def lpips_with_trunk(net: str, state: dict | None, source: str) -> torch.nn.Module:
    """The ``lpips`` package's LPIPS (v0.1) on ``net`` (``alex``, ``vgg``, ...), its trunk built untrained
    (``pnet_rand=True``) and filled from ``state``, a torchvision state dict read from ``source`` (None: the
    trunk stays random, tests only). The package ships its linear-layer weights."""
    # imported here: the lpips package loads torchvision's models, start-up time only LPIPS runs should pay
    import lpips

    with warnings.catch_warnings():  # lpips calls torchvision with the deprecated `pretrained=` argument
        warnings.simplefilter("ignore", UserWarning)
        model = lpips.LPIPS(pretrained=True, net=net, version="0.1", pnet_rand=True, verbose=False)
    if state is not None:
        # lpips keeps torchvision's `features` indices inside its slices: net.sliceK.<i>.weight <- features.<i>.weight
        trunk = {}
        for slice_name, block in model.net.named_children():
            for idx, layer in block.named_children():
                for pname in dict(layer.named_parameters(recurse=False)):
                    key = f"features.{idx}.{pname}"
                    if key not in state:
                        raise CheckpointMismatchError(f"{source} is not torchvision's {net} weights: no '{key}'")
                    trunk[f"{slice_name}.{idx}.{pname}"] = state[key]
        try:
            model.net.load_state_dict(trunk, strict=True)
        except RuntimeError as e:
            raise CheckpointMismatchError(f"{source} does not fit torchvision's {net}: {e}") from None
    return model.eval().requires_grad_(False)


def load_lpips(weights_path: str | os.PathLike | None = None, device: str | torch.device = "cpu"):
    """The ``lpips`` package's LPIPS (AlexNet, v0.1) with the backbone read from a local file, never downloaded
    (``alexnet-owt-7be5be79.pth``, found by :func:`find_alexnet_weights`)."""
    path = find_alexnet_weights(weights_path)
    try:
        state = read_state_dict(path)
    except CheckpointMismatchError as e:  # truncated download, HTML error page saved as .pth, ...
        raise CheckpointMismatchError(f"{e}; download it again from {ALEXNET_URL}") from None
    return lpips_with_trunk("alex", state, str(path)).to(device)


_LPIPS_MODELS: dict[tuple[str, str], torch.nn.Module] = {}


def lpips_distance(pred: ImageInput, target: ImageInput, *, quantize: bool = True,
                   weights_path: str | os.PathLike | None = None, model: torch.nn.Module | None = None):
    """LPIPS (AlexNet, v0.1) per image; lower is closer. Same inputs and return types as :func:`psnr`.

    Images are quantised to 8 bits first unless ``quantize=False``; the network runs on the input tensor's device
    in float32. ``model`` may be a preloaded :func:`load_lpips` result; otherwise one is loaded once and cached.
    """
    a, b = _prepare(pred, target, crop_border=0, y_channel=False, luma="matlab", quantize=quantize)
    if a.shape[1] != 3:
        raise MetricInputError(f"LPIPS needs RGB images, got {a.shape[1]} channel(s)")
    if model is None:
        device = pred.device if isinstance(pred, torch.Tensor) else torch.device("cpu")
        key = (str(find_alexnet_weights(weights_path)), str(device))
        if key not in _LPIPS_MODELS:
            _LPIPS_MODELS[key] = load_lpips(key[0], device)
        model = _LPIPS_MODELS[key]
    param = next(model.parameters())
    to_pm1 = lambda x: (torch.as_tensor(x) / _PEAK * 2 - 1).to(device=param.device, dtype=param.dtype)  # noqa: E731
    with torch.no_grad():
        d = model(to_pm1(a), to_pm1(b)).reshape(-1).to(torch.float64)
    return _finish(d, pred)
