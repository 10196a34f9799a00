"""Reading and writing images robustly: any common format -> RGB float32 (H, W, 3) in [0, 1].

Conversion policy (documented, never silent: every conversion returns a note the caller reports once):
- grayscale (L, I;16, 1-bit) -> replicated to three channels;
- RGBA / LA -> alpha dropped (benchmark images are opaque; a real alpha channel would be composited by the
  dataset's authors, not by us);
- palette (P) -> expanded to RGB;
- 16-bit: grayscale 16-bit PNGs keep full precision (value / 65535); 16-bit RGB PNGs are decoded by Pillow to
  8 bits (high byte), which the 8-bit metrics would quantise anyway;
- CMYK / YCbCr / other modes -> converted to RGB by Pillow.
An unreadable or truncated file raises ``DataError`` naming the file, and so does a decompression bomb: a header
claiming more pixels than Pillow decodes (``Image.MAX_IMAGE_PIXELS`` x 2; such a file is corrupt or hostile), found
from the header before any pixel is decoded (``header_problem``).

``read_image_as(path, reader)`` reads a file the way a peer's own test or metric script does (the peer presets,
docs/evaluation.md); ``reader_refusal`` says from the header alone whether that reader takes the file:
- ``varformer``: ``read_image`` above;
- ``cv2``: ``cv2.imread(path)`` with its default flag (Restormer's ``utils.load_img``): 3 channels, 8 bits; a
  16-bit file keeps its high byte (OpenCV's PNG reader strips the low byte; checked with OpenCV 5.1, PNG and TIFF),
  grayscale is replicated; 32-bit and float files are refused;
- ``pil``: ``Image.open(path).convert('RGB')`` (AirNet, DiffUIR's Python test): Pillow's own conversion, so a
  16-bit grayscale file (``I;16``) is clipped at 255;
- ``matlab``: MATLAB's ``imread`` in the authors' ``.m`` metric scripts: 8-bit RGB (alpha dropped) or 8-bit
  grayscale, which stays one channel (``gray_on_disk``; the scripts skip ``rgb2ycbcr`` for it); 16-bit (``imread``
  returns uint16, measured against a peak of 255), palette (``imread`` returns the indices), 1-bit and CMYK files
  are refused;
- ``matlab_rgb``: the same, for scripts that then call MATLAB's ``psnr`` / ``ssim`` on the RGB output (Restormer's
  ``evaluate_gopro_hide.m``, ``evaluate_sidd.m``): a one-channel file is refused too (MATLAB stops on the size
  mismatch);
- ``skimage``: ``skimage.io.imread`` in Restormer's ``evaluate_realblur.py``, which works only on 8-bit RGB files:
  anything else is refused.
"""
from __future__ import annotations

import os
import re
from typing import Dict, Optional, Tuple

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from PIL.PngImagePlugin import PngInfo

from varformer.errors import DataError
from varformer.files import atomic_output

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
READERS = ("varformer", "cv2", "pil", "matlab", "matlab_rgb", "skimage")
_SIXTEEN_BIT_GRAY = ("I;16", "I;16B", "I;16L", "I;16N")
# what opening or decoding a bad file raises (Pillow's DecompressionBombError is a plain Exception)
_READ_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError)


def is_image_file(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS) and not os.path.basename(name).startswith(".")


def read_image(path: str) -> Tuple[np.ndarray, Optional[str]]:
    """Return (RGB float32 (H, W, 3) in [0, 1], conversion note or None); ``DataError`` if unreadable."""
    try:
        with Image.open(path) as im:
            im.load()  # force decoding now so truncated files fail here, with the name
            mode = im.mode
            note = None
            if mode == "RGB":
                arr = np.asarray(im, dtype=np.uint8).astype(np.float32) / 255.0
            elif mode in ("I;16", "I;16B", "I;16L", "I"):
                raw = np.asarray(im).astype(np.float32)
                peak = 65535.0 if raw.max(initial=0) > 255 or mode.startswith("I;16") else 255.0
                arr = np.repeat((raw / peak)[..., None], 3, axis=2)
                note = f"16-bit grayscale ({mode}) replicated to RGB, scaled by 1/{int(peak)}"
            elif mode in ("L", "1"):
                arr = np.repeat(np.asarray(im.convert("L"), dtype=np.float32)[..., None] / 255.0, 3, axis=2)
                note = f"grayscale ({mode}) replicated to RGB"
            elif mode in ("RGBA", "LA", "PA"):
                arr = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
                note = f"{mode}: alpha channel dropped"
            else:
                arr = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
                note = f"{mode} converted to RGB"
            if mode in ("RGB", "RGBA") and _png_bit_depth(path) == 16:
                note = f"16-bit {mode} PNG decoded to 8 bits by Pillow (high byte)" + (", alpha dropped" if note else "")
    except _READ_ERRORS as e:
        raise _open_failed(path, e) from None
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise DataError(f"unexpected image shape {arr.shape} in {path}")
    return np.ascontiguousarray(arr), note


def _open_failed(path: str, e: Exception) -> DataError:
    if isinstance(e, FileNotFoundError):
        return DataError(f"image not found: {path}")
    if isinstance(e, Image.DecompressionBombError):
        size = re.search(r"\((\d+) pixels\)", str(e))
        claimed = f"{int(size.group(1)):,} pixels" if size else "more pixels than Pillow decodes"
        return DataError(f"{path}: its header claims {claimed}, over Pillow's decompression-bomb limit of "
                         f"{2 * Image.MAX_IMAGE_PIXELS:,}: not decoded (a corrupt or hostile file)")
    return DataError(f"unreadable or corrupt image: {path} ({type(e).__name__}: {e})")


def _header(path: str) -> Tuple[str, int]:
    """(Pillow mode, bits per sample) from the file header, without decoding the pixels."""
    try:
        with Image.open(path) as im:
            mode = im.mode
    except _READ_ERRORS as e:
        raise _open_failed(path, e) from None
    if mode == "I" and _png_bit_depth(path) == 16:
        mode = "I;16"  # Pillow < 10 opens a 16-bit grayscale PNG as 32-bit "I"; the file holds 16 bits
    bits = 16 if mode in _SIXTEEN_BIT_GRAY else 32 if mode in ("I", "F") else 8
    if mode in ("RGB", "RGBA") and _png_bit_depth(path) == 16:
        bits = 16  # Pillow reports a 16-bit RGB PNG as 8-bit RGB (it keeps the high byte)
    return mode, bits


def reader_refusal(path: str, reader: str) -> Optional[str]:
    """Why ``reader`` (see the module docstring) cannot stand for its author's loader on this file, or None."""
    return _refusal(path, reader)[0]


def _refusal(path: str, reader: str) -> Tuple[Optional[str], Optional[str]]:
    """(refusal or None, Pillow mode or None when the reader needs no header)."""
    if reader not in READERS:
        raise DataError(f"unknown image reader '{reader}' (known: {', '.join(READERS)})")
    if reader in ("varformer", "pil"):
        return None, None
    mode, bits = _header(path)
    if reader == "cv2":
        refusal = f"{bits}-bit {mode} image: OpenCV's imread reads 8- and 16-bit files only" if bits == 32 else None
        return refusal, mode
    if reader == "skimage":
        if mode == "RGB" and bits == 8:
            return None, mode
        return (f"{bits}-bit {mode} image: Restormer's evaluate_realblur.py (skimage.io.imread) works on 8-bit RGB "
                f"files only"), mode
    # matlab, matlab_rgb
    if bits != 8:
        return (f"{bits}-bit {mode} image: MATLAB's imread returns it as uint{bits} and the .m script measures it "
                f"against a peak of 255"), mode
    if mode in ("L", "LA") and reader == "matlab_rgb":
        return (f"one-channel {mode} image: the .m script compares it with the 3-channel output and MATLAB's "
                f"psnr / ssim stop on the size mismatch"), mode
    if mode in ("RGB", "RGBA", "L", "LA"):
        return None, mode
    what = {"P": "palette", "PA": "palette", "1": "1-bit", "CMYK": "CMYK"}.get(mode, mode)
    return f"{what} image: MATLAB's imread does not return it as 8-bit RGB or grayscale values", mode


def read_image_as(path: str, reader: str) -> Tuple[np.ndarray, Optional[str], bool]:
    """(RGB float32 (H, W, 3) in [0, 1], conversion note or None, gray_on_disk) as ``reader`` reads ``path``.

    ``gray_on_disk`` is True only for the ``matlab`` reader on a one-channel file (the array is still replicated to
    three channels; the metric uses one). A file the reader cannot stand for raises ``DataError`` (one line)."""
    refusal, mode = _refusal(path, reader)
    if refusal is not None:
        raise DataError(f"{path}: {refusal}; convert it to 8-bit RGB to evaluate it under this preset")
    if reader != "pil" and not (reader == "cv2" and mode in _SIXTEEN_BIT_GRAY):
        # 8-bit files and 16-bit RGB PNGs: Pillow decodes them as OpenCV and MATLAB do (high byte for 16-bit RGB)
        arr, note = read_image(path)
        gray = reader == "matlab" and mode in ("L", "LA")
        if gray:
            note = f"one-channel file ({mode}): measured as one channel, as MATLAB's imread returns it"
        return arr, note, gray
    try:
        with Image.open(path) as im:
            im.load()
            if reader == "pil":
                rgb = np.asarray(im.convert("RGB"), dtype=np.uint8)
                note = None if im.mode == "RGB" else f"{im.mode} converted to RGB by Pillow (convert('RGB'))"
            else:  # cv2 on a 16-bit grayscale file: high byte, replicated
                high = (np.asarray(im).astype(np.uint16) >> 8).astype(np.uint8)
                rgb = np.repeat(high[..., None], 3, axis=2)
                note = f"16-bit grayscale ({im.mode}): high byte kept and replicated to RGB (as cv2.imread)"
    except _READ_ERRORS as e:
        raise _open_failed(path, e) from None
    if rgb.ndim != 3 or rgb.shape[2] != 3 or 0 in rgb.shape:
        raise DataError(f"unexpected image shape {rgb.shape} in {path}")
    return np.ascontiguousarray(rgb, dtype=np.float32) / 255.0, note, False


def _png_bit_depth(path: str) -> Optional[int]:
    """Bit depth from a PNG's IHDR (Pillow reports 16-bit RGB PNGs as plain 8-bit ``RGB``)."""
    with open(path, "rb") as fh:
        head = fh.read(26)
    if head[:8] != b"\x89PNG\r\n\x1a\n" or len(head) < 26:
        return None
    return head[24]


def image_size(path: str) -> Tuple[int, int]:
    """(H, W) from the header only (fast); ``DataError`` if unreadable."""
    try:
        with Image.open(path) as im:
            w, h = im.size
            return h, w
    except _READ_ERRORS as e:
        raise _open_failed(path, e) from None


def header_problem(path: str) -> Optional[str]:
    """Why ``path``'s header cannot be read (missing, corrupt, a decompression bomb), or None."""
    try:
        image_size(path)
        return None
    except DataError as e:
        return str(e)


def verify_image(path: str) -> Optional[str]:
    """None if the file decodes fully, else the reason (for ``varformer data check``)."""
    try:
        read_image(path)
        return None
    except DataError as e:
        return str(e)


def to_tensor(img_HW3: np.ndarray) -> torch.Tensor:
    """(H, W, 3) float [0, 1] -> (3, H, W) float32 tensor."""
    return torch.from_numpy(np.ascontiguousarray(img_HW3.transpose(2, 0, 1))).float()


def to_uint8(img: np.ndarray) -> np.ndarray:
    """Float [0, 1] -> uint8 with rounding (BasicSR ``tensor2img`` convention)."""
    return np.clip(np.round(np.asarray(img, dtype=np.float64) * 255.0), 0, 255).astype(np.uint8)


def tensor_to_uint8(x_3HW: torch.Tensor) -> np.ndarray:
    """(3, H, W) float [0, 1] tensor -> (H, W, 3) uint8 (clamp, x255, round)."""
    x = x_3HW.detach().float().clamp(0, 1).mul(255.0).round().to(torch.uint8)
    return x.permute(1, 2, 0).cpu().numpy()


def write_image(path: str | os.PathLike, img: np.ndarray, text: Optional[Dict[str, str]] = None) -> None:
    """Write (H, W[, 3]) uint8 or float [0, 1]; the format follows the extension (PNG recommended: lossless),
    through a temporary renamed into place (the one image writer of the package). ``text``: PNG text chunks
    (e.g. which program wrote the file)."""
    path = str(path)
    arr = img if img.dtype == np.uint8 else to_uint8(img)
    ext = os.path.splitext(path)[1].lower()
    fmt = Image.registered_extensions().get(ext)
    if fmt is None:
        raise DataError(f"cannot write {path}: unknown image extension {ext!r}")
    kwargs: Dict[str, object] = {"quality": 95} if ext in (".jpg", ".jpeg") else {}
    if text and fmt == "PNG":
        info = PngInfo()
        for key, value in text.items():
            info.add_text(key, value)
        kwargs["pnginfo"] = info
    with atomic_output(path) as tmp:
        Image.fromarray(arr).save(tmp, format=fmt, **kwargs)
