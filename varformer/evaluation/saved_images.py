"""What a no-reference metric reads: the restored image as the author's scripts stored it, and the settings each
paper used for those metrics (recorded in its evaluation preset, ``varformer.evaluation.protocols``).

A no-reference score depends on the file it is computed from: 8-bit rounding or truncation, and above all JPEG
compression, move MUSIQ and CLIP-IQA. ``SavedImageRule.apply`` turns a restored batch into the pixels the author's
metric script would have read back:

- ``to_uint8``: ``round`` (x255 and round: an 8-bit PNG, what ``--save-images`` writes) or ``floor`` (x255 and
  truncate, ``astype(uint8)`` on the scaled float);
- ``grid3``: the image is stored beside the degraded input and the ground truth (``[input | restored | GT]``) and
  the middle panel is cut out again later; with JPEG the neighbouring panels reach the middle one through the
  decoder's chroma upsampling at the two seams, so the grid is encoded whole;
- JPEG: a source file named ``.jpg``/``.jpeg`` keeps that extension, so it is stored as JPEG at ``jpeg_first``
  and re-encoded at ``jpeg_again`` when the panel is cut out; ``jpeg_benchmarks`` are always stored as JPEG at
  ``jpeg_forced``, twice. Encoding and decoding use Pillow (libjpeg: 4:2:0 chroma, the IJG tables at the quality).

RestoreVAR (Table 2; official infer.py, split_saved_imgs.py, conv_png.py, calc_metric.py): the 1536x512 grid
floored to 8 bits, saved by PIL from the name's extension (JPEG quality 75, PIL's default, for ``.jpg`` names; CDD
and LOLBlur always JPEG quality 95); the middle 512 columns cut out with OpenCV and written again with the same
extension (JPEG quality 95, OpenCV's default); converted to PNG (CDD and LOLBlur kept as JPEG); then pyiqa 0.1.13
``musiq`` and ``clipiqa`` with their defaults on the stored 512x512 RGB image, no crop. OpenCV's re-encode is
done here with Pillow at the same quality (docs/evaluation.md gives the measured difference).
"""
from __future__ import annotations

import io
import os
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image

from varformer.errors import DataError

JPEG_EXTENSIONS = (".jpg", ".jpeg")


def to_uint8(x_3HW: torch.Tensor, how: str) -> np.ndarray:
    """(3, H, W) float in [0, 1] -> (H, W, 3) uint8 by ``round`` or ``floor``."""
    x = x_3HW.detach().float().clamp(0, 1).mul(255.0)
    x = x.round() if how == "round" else x.floor()
    return x.to(torch.uint8).permute(1, 2, 0).cpu().numpy()


def jpeg_roundtrip(img_HW3: np.ndarray, quality: int) -> np.ndarray:
    """Encode as baseline JPEG at ``quality`` with Pillow and decode back (uint8 RGB)."""
    buf = io.BytesIO()
    Image.fromarray(img_HW3).save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    with Image.open(buf) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8)


@dataclass(frozen=True)
class SavedImageRule:
    """How an author's script stores a restored image before its no-reference metrics read it back (module doc)."""
    to_uint8: str = "round"                  # "round" | "floor"
    grid3: bool = False                      # stored as [input | restored | GT], the middle cut out again
    jpeg_first: Optional[int] = None         # .jpg/.jpeg source names: stored as JPEG at this quality
    jpeg_again: Optional[int] = None         # ... and re-encoded at this quality when cut out
    jpeg_benchmarks: Tuple[str, ...] = ()    # these benchmarks: always JPEG at jpeg_forced (twice)
    jpeg_forced: Optional[int] = None

    def __post_init__(self):
        if self.to_uint8 not in ("round", "floor"):
            raise ValueError(f"to_uint8 must be 'round' or 'floor', got {self.to_uint8!r}")

    def qualities(self, file: str, benchmark: str) -> Tuple[Optional[int], Optional[int]]:
        """The (first, second) JPEG qualities for one image; (None, None): stored losslessly."""
        if benchmark in self.jpeg_benchmarks:
            return self.jpeg_forced, self.jpeg_forced
        if os.path.splitext(file)[1].lower() in JPEG_EXTENSIONS:
            return self.jpeg_first, self.jpeg_again
        return None, None

    def apply_one(self, lq_3HW: torch.Tensor, out_3HW: torch.Tensor, gt_3HW: torch.Tensor, file: str,
                  benchmark: str) -> np.ndarray:
        """The stored restored image as uint8 (H, W, 3)."""
        W = out_3HW.shape[-1]
        img = to_uint8(out_3HW, self.to_uint8)
        if self.grid3:
            if lq_3HW.shape != out_3HW.shape or gt_3HW.shape != out_3HW.shape:
                raise DataError(f"{benchmark}/{file}: the 3-panel grid needs input, output and GT of one size, got "
                                f"{tuple(lq_3HW.shape)}, {tuple(out_3HW.shape)}, {tuple(gt_3HW.shape)}")
            img = np.concatenate([to_uint8(lq_3HW, self.to_uint8), img, to_uint8(gt_3HW, self.to_uint8)], axis=1)
        first, again = self.qualities(file, benchmark)
        if first is not None:
            img = jpeg_roundtrip(img, first)
        if self.grid3:
            img = np.ascontiguousarray(img[:, W:2 * W])
        if again is not None:
            img = jpeg_roundtrip(img, again)
        return img

    def apply(self, lq_B3HW: torch.Tensor, out_B3HW: torch.Tensor, gt_B3HW: torch.Tensor, files: Sequence[str],
              benchmark: str) -> torch.Tensor:
        """The stored images of a batch as float (B, 3, H, W) in [0, 1] (values k / 255), on ``out``'s device."""
        imgs = [self.apply_one(lq_B3HW[i], out_B3HW[i], gt_B3HW[i], files[i], benchmark)
                for i in range(out_B3HW.shape[0])]
        x = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).float().div(255.0)
        return x.to(out_B3HW.device)

    def describe(self) -> str:
        parts = [f"8-bit by {self.to_uint8}"]
        if self.grid3:
            parts.append("stored in a 3-panel grid [input | restored | GT], middle cut out")
        if self.jpeg_first is not None:
            again = f" then q{self.jpeg_again}" if self.jpeg_again else ""
            parts.append(f".jpg names JPEG q{self.jpeg_first}{again}")
        if self.jpeg_benchmarks:
            parts.append(f"{', '.join(self.jpeg_benchmarks)} always JPEG q{self.jpeg_forced}")
        return "; ".join(parts)


@dataclass(frozen=True)
class NrSettings:
    """The no-reference metric settings a paper used, recorded with its preset and printed with its results."""
    pyiqa_version: str = ""                   # the version the authors' environment pins ("": not stated)
    metrics: Tuple[str, ...] = ()             # the pyiqa metrics the paper reports (each at pyiqa's defaults)
    colour: str = "RGB"                       # what the metric is given
    crop: str = "none"                        # border crop or resize before the metric
    saving: SavedImageRule = SavedImageRule()
    source: str = ""                          # the author's files these settings come from

    def describe(self) -> str:
        version = f"pyiqa {self.pyiqa_version}" if self.pyiqa_version else "pyiqa version not stated"
        what = f" ({', '.join(self.metrics)})" if self.metrics else ""
        return (f"{version}{what}, defaults, {self.colour}, crop {self.crop}, input as stored: {self.saving.describe()}"
                + (f" [{self.source}]" if self.source else ""))
