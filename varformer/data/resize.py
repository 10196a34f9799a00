"""Resizing and cropping of (3, H, W) float images as the evaluation protocols and the validation define them
(``varformer.evaluation.protocols``: which protocol uses which)."""
from __future__ import annotations

from typing import Tuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from varformer.errors import DataError


def center_crop_to_multiple(x_3HW: torch.Tensor, base: int) -> torch.Tensor:
    H, W = x_3HW.shape[-2:]
    h, w = H - H % base, W - W % base
    if h == 0 or w == 0:
        raise DataError(f"image of {W}x{H} is smaller than the centre-crop multiple {base}")
    y, x = (H - h) // 2, (W - w) // 2
    return x_3HW[..., y:y + h, x:x + w]


def resize_bilinear(x_3HW: torch.Tensor, size: int) -> torch.Tensor:
    """cv2.resize(INTER_LINEAR) on float images: half-pixel centres, border clamp, no antialiasing."""
    if tuple(x_3HW.shape[-2:]) == (size, size):
        return x_3HW
    return F.interpolate(x_3HW[None].float(), size=(size, size), mode="bilinear", align_corners=False,
                         antialias=False)[0]


def resize_lanczos_pil(x_3HW: torch.Tensor, size: int) -> torch.Tensor:
    """PIL ``Image.resize((size, size), LANCZOS)`` on the 8-bit image (RestoreVAR loads PIL images)."""
    arr = x_3HW.clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    out = np.asarray(Image.fromarray(arr).resize((size, size), Image.LANCZOS), dtype=np.float32) / 255.0
    return torch.from_numpy(out).permute(2, 0, 1).contiguous()


def resize_to(x_3HW: torch.Tensor, hw: Tuple[int, int]) -> torch.Tensor:
    """Bicubic with antialiasing (MATLAB ``imresize`` default) - used for DiffUIR's SOTS GT resize."""
    return F.interpolate(x_3HW[None].float(), size=hw, mode="bicubic", align_corners=False, antialias=True)[0].clamp(0, 1)


PIL_FILTERS = {"lanczos": Image.LANCZOS, "bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR}


def resize_pil(x_3HW: torch.Tensor, hw: Tuple[int, int], filter: str = "lanczos") -> torch.Tensor:
    """PIL ``Image.resize((w, h), filter)`` on the 8-bit image (rounded to 8 bits first: exact for images read from
    8-bit files), as releases that work on PIL images resize; float32 (3, h, w) in [0, 1] on the input's device."""
    if filter not in PIL_FILTERS:
        raise DataError(f"unknown resize filter {filter!r} (known: {', '.join(PIL_FILTERS)})")
    h, w = int(hw[0]), int(hw[1])
    if h < 1 or w < 1:
        raise DataError(f"cannot resize to {h}x{w}")
    arr = x_3HW.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    out = np.asarray(Image.fromarray(arr).resize((w, h), PIL_FILTERS[filter]), dtype=np.float32) / 255.0
    return torch.from_numpy(out).permute(2, 0, 1).contiguous().to(x_3HW.device)
