"""Evaluation protocols: how LQ/GT are prepared, how the restorer is run, and how PSNR/SSIM are measured.

``paper`` (= preset ``varformer-code``): what the official code can reproduce (docs/evaluation.md): LQ and GT
resized to 256x256 with bilinear interpolation (half-pixel centres, no antialiasing: ``cv2.resize(INTER_LINEAR)``
on float images, which ``F.interpolate(mode="bilinear", align_corners=False, antialias=False)`` matches to float
rounding for down- and up-sampling - checked against OpenCV 5.0, fixture ``tests/fixtures/eval_cv2_inter_linear.npz``),
output and GT rounded to 8 bits, RGB, crop border 4, BasicSR SSIM (Gaussian 11x11, sigma 1.5, valid).

``full``: native resolution; a fixed-size restorer runs on overlapping blended tiles (``varformer.inference.tiling``, the
function ``varformer restore`` uses), an any-size one on the image padded to its size multiple; otherwise the
``paper`` metric settings (RGB, crop 4, BasicSR SSIM), so the two differ only in resolution. Colour, SSIM variant
and crop border can be changed (``with_metric_overrides``).

Presets reproducing the peers' published evaluation, each rule from the authors' own files (docs/evaluation.md
names them and the largest difference measured against literal translations of them):
- ``restormer``: full resolution, input reflect-padded to a multiple of 8, read as ``cv2.imread`` reads it, output
  saved to 8 bits as ``img_as_ubyte`` does (``quantize='float32'``); deraining: Y of MATLAB ``rgb2ycbcr`` on uint8
  (rounded) + Wang SSIM (valid), a one-channel ground truth measured as it is (``evaluate_PSNR_SSIM.m``); GoPro /
  HIDE: RGB, MATLAB ``psnr`` / ``ssim`` (the 3-D Gaussian, ``ssim_mode='replicate'``; ``evaluate_gopro_hide.m``);
  RealBlur: ECC alignment + masked PSNR / SSIM (``evaluate_realblur.py``, ``varformer.evaluation.realblur``);
  SIDD: MATLAB ``psnr`` / ``ssim`` on the float output, not rounded (``evaluate_sidd.m``); Gaussian noise per
  image with ``seed(0)``, float, unclipped (``test_gaussian_color_denoising.py``);
- ``diffuir``: full resolution, read with Pillow's ``convert('RGB')``, outputs rounded as ``tensor2img``; Y
  (BT.601 limited, not rounded), replicate-border SSIM over the whole map, crop 0 (``src/model.py``); SOTS: rounded
  Y + Wang SSIM (valid), the one-channel rule, the GT resized to the output size (``eval/SOTS.m``);
- ``airnet``: LQ and GT read with Pillow's ``convert('RGB')`` and centre-cropped to multiples of 16, RGB,
  scikit-image default SSIM (7x7 uniform, sample covariance), PSNR/SSIM on float outputs clipped to [0, 1] (not
  quantised), AirNet's noise: one NumPy stream seeded once, running through sigma 15, 25 and 50 in that order
  (``test.py``);
- ``restorevar``: LQ and GT resized to 512x512 with Lanczos (PIL, on 8-bit images), RGB, scikit-image default
  SSIM, LPIPS (AlexNet), on the float output clipped to [0, 1] (RestoreVAR's infer.py does not quantise it); the
  authors' JSON lists (``--list``) capped at their first 5,001 entries as infer.py stops; fp32 (infer.py); no-reference
  metrics on the image as the release stores it (``RESTOREVAR_NR``: 8-bit floor, its JPEG rule, pyiqa
  0.1.13 MUSIQ and CLIP-IQA).
- ``varestorer``: super-resolution as VARestorer's benchmark driver (tools/infer4eval.py) runs it: the LQ alone
  resized to 512x512 by PIL's default filter (bicubic), the network on it once (no further upsampling, no resize
  back: the output is 512x512), a seed per image (``torch.manual_seed(seed)`` before each image, as its
  ``seed_everything``), RGB; PSNR / SSIM / LPIPS of the 8-bit output against the GT as it is (the StableSR test
  sets' 512x512 crops), no-reference metrics through ``--metrics``. Its metric script was not released: colour
  space, SSIM variant, border crop and pyiqa version are not known; RGB, BasicSR SSIM, crop 0, LPIPS (AlexNet) and
  pyiqa's defaults here (docs/varestorer.md).
Published numbers are shown only beside the preset they were measured with (``published_tag``). ``precision``: the
precision of the paper's evaluation (fp32 for ``paper`` / ``varformer-code``, as the official test script, and for
``restorevar``), used unless the user asks for another.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple

import torch

from varformer.data.resize import center_crop_to_multiple, resize_bilinear, resize_lanczos_pil, resize_pil
from varformer.errors import ConfigError
from varformer.evaluation.saved_images import NrSettings, SavedImageRule
from varformer.metrics import SSIM_MODES, Quantize


@dataclass(frozen=True)
class MetricSettings:
    y_channel: bool = False
    luma: str = "matlab"
    ssim_mode: str = "basicsr"
    crop_border: int = 0
    quantize: Quantize = True      # round outputs/GT to 8 bits before measuring ("float32": as the authors' scripts)
    lpips: bool = False
    gt_reader: str = "varformer"   # how the measuring script reads the GT file (varformer.data.image_io.READERS)
    gray_skips_luma: bool = False  # a one-channel GT is measured without rgb2ycbcr (the MATLAB scripts' rule)
    measure: str = "standard"      # "realblur": Restormer's aligned measure (varformer.evaluation.realblur)

    def describe(self) -> str:
        q = "8-bit" if self.quantize else "float"
        if self.measure == "realblur":
            return f"RealBlur: ECC-aligned, masked PSNR, masked Gaussian SSIM per channel, {q}"
        luma = "MATLAB rgb2ycbcr on uint8, rounded" if self.luma == "matlab_uint8" else self.luma
        colour = f"Y ({luma})" if self.y_channel else "RGB"
        gray = "; a one-channel GT as it is" if self.gray_skips_luma else ""
        return (f"{colour}, SSIM {self.ssim_mode}, crop {self.crop_border}, {q}" + (", LPIPS" if self.lpips else "")
                + gray)


PAPER_METRICS = MetricSettings(crop_border=4)
# VARestorer's no-reference settings, as far as its release shows them (the preset below)
VARESTORER_NR = NrSettings(
    pyiqa_version="", metrics=("maniqa", "musiq", "niqe", "clipiqa", "liqe", "qalign", "fid"), colour="RGB",
    crop="none (the 512x512 output)", saving=SavedImageRule(to_uint8="floor", jpeg_first=95),
    source="VARestorer tools/infer4eval.py writes the 8-bit output (truncated) with cv2.imwrite under the LQ's file "
           "name (JPEG quality 95, OpenCV's default, for .jpg names); its metric script was not released")


@dataclass(frozen=True)
class Protocol:
    name: str
    caption: str
    resize: Optional[Tuple[str, int]] = None   # ("bilinear", 256) | ("lanczos", 512): LQ and GT resized first
    center_crop: int = 0                       # centre-crop LQ and GT to multiples of this (AirNet: 16)
    pad_multiple: int = 1                      # any-size restorers: pad the input to a multiple of this
    noise_rule: str = "seeded"                 # Gaussian-noise sets (varformer.data.benchmark_data.NOISE_RULES)
    lq_reader: str = "varformer"               # how the test script reads input (and clean) files
    metrics: MetricSettings = PAPER_METRICS
    task_metrics: Tuple[Tuple[str, MetricSettings], ...] = ()   # per-task overrides
    gt_resize_benchmarks: Tuple[str, ...] = ()  # GT resized to the output size when they differ (DiffUIR SOTS)
    published_tag: str = ""                    # published tables measured with this protocol
    # RestoreVAR's tables (docs/restorevar.md): no-reference settings, the cap on list sources, the precision
    nr: NrSettings = NrSettings()              # how the paper's no-reference metrics read the restored image
    list_cap: Optional[int] = None             # --list sources: only the first N entries of each list file
    precision: Optional[str] = None            # the paper's evaluation precision; used unless --precision is given
    # super-resolution presets: the LQ alone resized to the output size (PIL filter, side); a pre-upsampling
    # restorer's network runs on it as it is (varformer.inference.images), the GT is kept
    lq_upsample: Optional[Tuple[str, int]] = None
    seed_per_image: Optional[int] = None       # torch.manual_seed(seed) before each image (stochastic samplers)

    def metrics_for(self, task: str, benchmark: str) -> MetricSettings:
        """The first override naming the benchmark, else the first naming its task, else the default."""
        for key, m in self.task_metrics:
            if key == benchmark:
                return m
        for key, m in self.task_metrics:
            if key == task:
                return m
        return self.metrics

    def readers_for(self, task: str, benchmark: str) -> Dict[str, str]:
        """Keyword arguments of ``benchmark_dataset``: the noise rule and the two file readers."""
        return {"noise_rule": self.noise_rule, "lq_reader": self.lq_reader,
                "gt_reader": self.metrics_for(task, benchmark).gt_reader}

    # -- preparation ---------------------------------------------------------------------------------------------
    def prepare(self, lq_3HW: torch.Tensor, gt_3HW: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        if self.center_crop:
            lq_3HW, gt_3HW = center_crop_to_multiple(lq_3HW, self.center_crop), center_crop_to_multiple(gt_3HW, self.center_crop)
        if self.resize is not None:
            kind, size = self.resize
            lq_3HW, gt_3HW = RESIZERS[kind](lq_3HW, size), RESIZERS[kind](gt_3HW, size)
        if self.lq_upsample is not None:
            kind, size = self.lq_upsample
            lq_3HW = resize_pil(lq_3HW, (size, size), kind)
        return lq_3HW, gt_3HW


RESIZERS: Dict[str, Callable[[torch.Tensor, int], torch.Tensor]] = {
    "bilinear": resize_bilinear, "lanczos": resize_lanczos_pil}

_Y_WANG = MetricSettings(y_channel=True, ssim_mode="basicsr")
# the MATLAB scripts on saved uint8 PNGs: Restormer Deraining/evaluate_PSNR_SSIM.m, DiffUIR eval/SOTS.m
_Y_MATLAB_UINT8 = MetricSettings(y_channel=True, luma="matlab_uint8", ssim_mode="basicsr", quantize="float32",
                                 gt_reader="matlab", gray_skips_luma=True)
_RESTORMER = {
    # Motion_Deblurring/evaluate_gopro_hide.m: MATLAB psnr / ssim on uint8 RGB
    "blur": MetricSettings(ssim_mode="replicate", quantize="float32", gt_reader="matlab_rgb"),
    # Motion_Deblurring/evaluate_realblur.py
    "realblur": MetricSettings(measure="realblur", quantize="float32", gt_reader="skimage"),
    # Denoising/test_real_denoising_SIDD.py saves float32 .mat; evaluate_sidd.m: MATLAB psnr / ssim in single
    "realnoise": MetricSettings(ssim_mode="replicate", quantize=False, gt_reader="matlab_rgb"),
    # Denoising/evaluate_gaussian_color_denoising.py: PSNR of the saved uint8 PNGs (it reports no SSIM)
    "noise": MetricSettings(quantize="float32", gt_reader="cv2"),
}

# RestoreVAR's Table 2: its no-reference metrics on the image as its release stores it (docs/restorevar.md)
RESTOREVAR_NR = NrSettings(
    pyiqa_version="0.1.13", metrics=("musiq", "clipiqa"), colour="RGB", crop="none (the stored 512x512 image)",
    saving=SavedImageRule(to_uint8="floor", grid3=True, jpeg_first=75, jpeg_again=95,
                          jpeg_benchmarks=("cdd", "lolblur"), jpeg_forced=95),
    source="RestoreVAR infer.py, split_saved_imgs.py, conv_png.py, calc_metric.py, requirements_iqa.txt")


PROTOCOLS: Dict[str, Protocol] = {p.name: p for p in [
    Protocol("paper", "paper protocol (what the official VarFormer code computes; the paper's own metric "
             "settings are unverified): LQ and GT bilinear-resized to 256x256, RGB, crop 4, BasicSR SSIM, 8-bit",
             resize=("bilinear", 256), published_tag="varformer-code", precision="fp32"),
    Protocol("varformer-code", "preset varformer-code (= paper; the paper's own metric settings are "
             "unverified): LQ and GT bilinear-resized to 256x256, RGB, crop 4, BasicSR SSIM, 8-bit",
             resize=("bilinear", 256), published_tag="varformer-code", precision="fp32"),
    Protocol("full", "full protocol: native resolution (tiled / padded), RGB, crop 4, BasicSR SSIM, 8-bit"),
    Protocol("restormer", "preset restormer: native resolution, pad to x8, cv2 reading; derain rounded Y (MATLAB "
             "rgb2ycbcr on uint8) + Wang SSIM; GoPro/HIDE RGB + MATLAB ssim (3-D Gaussian); RealBlur ECC-aligned, "
             "masked; SIDD float, MATLAB ssim; 8-bit as img_as_ubyte, crop 0",
             pad_multiple=8, noise_rule="restormer", lq_reader="cv2", metrics=MetricSettings(),
             task_metrics=(("rain", _Y_MATLAB_UINT8), ("blur", _RESTORMER["blur"]),
                           ("realblur-j", _RESTORMER["realblur"]), ("realblur-r", _RESTORMER["realblur"]),
                           ("realnoise", _RESTORMER["realnoise"]), ("noise", _RESTORMER["noise"])),
             published_tag="restormer"),
    Protocol("diffuir", "preset diffuir: native resolution, Y (BT.601 limited), replicate-border SSIM, crop 0, "
             "8-bit; SOTS: rounded Y (MATLAB rgb2ycbcr on uint8) + Wang SSIM with GT resized to the output",
             lq_reader="pil",
             metrics=MetricSettings(y_channel=True, ssim_mode="replicate", quantize="float32", gt_reader="pil"),
             task_metrics=(("haze", _Y_MATLAB_UINT8),), gt_resize_benchmarks=("sots-outdoor", "sots-indoor"),
             published_tag="diffuir"),
    Protocol("airnet", "preset airnet: LQ and GT centre-cropped to x16, RGB, scikit-image default SSIM "
             "(7x7 uniform), float outputs clipped to [0,1], AirNet noise rule (one stream through sigma 15, 25, 50)",
             center_crop=16, noise_rule="airnet", lq_reader="pil",
             metrics=MetricSettings(ssim_mode="skimage_default", quantize=False, gt_reader="pil"),
             published_tag="airnet"),
    Protocol("restorevar", "preset restorevar: LQ and GT resized to 512x512 (Lanczos), RGB, scikit-image default "
             "SSIM, float outputs clipped to [0,1], LPIPS (AlexNet)", resize=("lanczos", 512),
             metrics=MetricSettings(ssim_mode="skimage_default", quantize=False, lpips=True),
             published_tag="restorevar", nr=RESTOREVAR_NR, list_cap=5001, precision="fp32"),
    Protocol("varestorer", "preset varestorer: x4 super-resolution, LQ bicubic-resized (PIL) to 512x512, one step, "
             "torch seed 0 before each image, RGB, BasicSR SSIM, crop 0, 8-bit, LPIPS (AlexNet); the paper's metric "
             "settings are unpublished", lq_upsample=("bicubic", 512), seed_per_image=0,
             metrics=MetricSettings(lpips=True), published_tag="varestorer", nr=VARESTORER_NR),
]}


def get_protocol(name: str) -> Protocol:
    if name not in PROTOCOLS:
        raise ConfigError(f"unknown protocol '{name}' (known: {', '.join(PROTOCOLS)})")
    return PROTOCOLS[name]


def with_metric_overrides(protocol: Protocol, *, y_channel: Optional[bool] = None, ssim_mode: Optional[str] = None,
                          crop_border: Optional[int] = None, lpips: Optional[bool] = None) -> Protocol:
    """A copy with changed metric settings; anything changed on a peer preset makes it no longer that preset
    (its published numbers are then not shown)."""
    changes = {k: v for k, v in dict(y_channel=y_channel, ssim_mode=ssim_mode, crop_border=crop_border).items()
               if v is not None}
    if lpips is not None and lpips != protocol.metrics.lpips:
        changes["lpips"] = lpips
    if not changes:
        return protocol
    if ssim_mode is not None and ssim_mode not in SSIM_MODES:
        raise ConfigError(f"unknown SSIM mode '{ssim_mode}' (known: {', '.join(SSIM_MODES)})")
    metrics = dataclasses.replace(protocol.metrics, **changes)
    task_metrics = tuple((k, dataclasses.replace(m, **changes)) for k, m in protocol.task_metrics)
    only_lpips = set(changes) == {"lpips"}
    return dataclasses.replace(
        protocol, name=protocol.name if only_lpips else f"{protocol.name}*", metrics=metrics, task_metrics=task_metrics,
        caption=protocol.caption + f" (metrics changed: {', '.join(f'{k}={v}' for k, v in changes.items())})",
        published_tag=protocol.published_tag if only_lpips else "")
