"""Reading and writing images robustly: any common format -> RGB float32 (H, W, 3) in [0, 1].

Conversion policy (documented, never silent: every conversion returns a note the caller reports once):
- grayscale (L, I;16, 1-bit) -> replicated to three channels;
- RGBA / LA -> alpha dropped (benchmark images are opaque; a real alpha channel would be composited by the
  dataset's authors, not by us);
- palette (P) -> expanded to RGB;
- 16-bit: grayscale 16-bit PNGs keep full precision (value / 65535); 16-bit RGB PNGs are decoded by Pillow to
  8 bits (high byte), which the 8-bit metrics would quantise anyway;
- CMYK / YCbCr / other modes -> converted to RGB by Pillow.
An unreadable or truncated file raises ``DataError`` naming the file.
"""
from __future__ import annotations

import os
from typing import Optional, Tuple

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from varformer.errors import DataError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


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
    except FileNotFoundError:
        raise DataError(f"image not found: {path}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataError(f"unreadable or corrupt image: {path} ({type(e).__name__}: {e})") from None
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise DataError(f"unexpected image shape {arr.shape} in {path}")
    return np.ascontiguousarray(arr), note


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
    except FileNotFoundError:
        raise DataError(f"image not found: {path}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataError(f"unreadable or corrupt image: {path} ({type(e).__name__}: {e})") from None


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


def write_image(path: str, img: np.ndarray) -> None:
    """Write (H, W, 3) uint8 or float [0, 1]; the format follows the extension (PNG recommended: lossless)."""
    arr = img if img.dtype == np.uint8 else to_uint8(img)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    kwargs = {"quality": 95} if path.lower().endswith((".jpg", ".jpeg")) else {}
    Image.fromarray(arr).save(path, **kwargs)
