"""Helpers of the "nothing lost" tests (issue #26): every refused case says one line and leaves every file that
was there byte-identical."""
import hashlib
import os
import struct
import zlib
from typing import Dict

from PIL import Image


def snapshot(folder) -> Dict[str, str]:
    """SHA-256 of every file under ``folder`` (relative path -> digest); folders listed with an empty digest."""
    out = {}
    for root, dirs, files in os.walk(folder):
        for d in dirs:
            out[os.path.relpath(os.path.join(root, d), folder) + "/"] = ""
        for f in files:
            p = os.path.join(root, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, folder)] = hashlib.sha256(fh.read()).hexdigest()
    return out


def one_line(err: str) -> str:
    """The one line a refused command printed (asserts there is exactly one, and no traceback)."""
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def error_line(err: str) -> str:
    """The one error line of a command that printed progress first (no traceback, one ``error:`` line)."""
    errors = [ln for ln in err.splitlines() if "error:" in ln]
    assert len(errors) == 1 and "Traceback" not in err, err
    return errors[0]


def bomb_png(path, side: int = 100_000) -> None:
    """A tiny PNG whose header claims ``side`` x ``side`` pixels (a decompression bomb for Pillow)."""
    Image.new("RGB", (1, 1)).save(path, format="PNG")
    with open(path, "rb") as fh:
        data = bytearray(fh.read())
    ihdr = data[12:29]  # chunk type + 13 data bytes
    ihdr[4:12] = struct.pack(">II", side, side)
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)) & 0xFFFFFFFF)
    with open(path, "wb") as fh:
        fh.write(bytes(data))
