"""Helpers that write miniature copies of real benchmark layouts (tiny random images, real file names)."""
import os
import struct
import zlib

import numpy as np
from PIL import Image


def write_rgb(path, h=12, w=16, seed=0, mode="RGB"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    img = Image.fromarray(arr)
    if mode != "RGB":
        img = img.convert(mode)
    img.save(path)
    return arr


def write_png16(path, arr):
    """Minimal 16-bit PNG writer (Pillow cannot write 16-bit RGB)."""
    arr = np.asarray(arr, dtype=">u2")
    h, w = arr.shape[:2]
    color_type = 2 if arr.ndim == 3 else 0
    raw = b"".join(b"\x00" + arr[y].tobytes() for y in range(h))

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0))
                 + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def make_pairs(folder, lq_sub, gt_sub, lq_names, gt_names, h=12, w=16):
    for i, (a, b) in enumerate(zip(lq_names, gt_names)):
        write_rgb(os.path.join(folder, lq_sub, a), h, w, seed=2 * i)
        write_rgb(os.path.join(folder, gt_sub, b), h, w, seed=2 * i + 1)


