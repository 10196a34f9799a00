"""The built-in demo benchmark: real photographs shipped with scikit-image, degraded by our standard models.

Layout (the real benchmarks' ``<task>/{input,target}``, one folder per task, two splits of *different* photos)::

    <cache>/manifest.json
    <cache>/test/<task>/{input,target}/<photo>_<k>.png      astronaut, coffee, motorcycle (left view)
    <cache>/train/<task>/{input,target}/<photo>_<k>.png     chelsea, rocket, hubble_deep_field,
                                                            immunohistochemistry, retina
    <cache>/train/clean/<photo>_<k>.png                     the clean training patches (stage 1)

Tasks: rain, haze, blur, lowlight, noise (``varformer.data.degradations``; haze on the motorcycle uses the depth
from its stereo disparity, a smooth depth prior elsewhere; noise is sigma 25, rounded to 8 bits like a saved
file). Photos larger than twice the patch are first downscaled (Lanczos) so patches show scenes, not texture;
patches are cut on a centred grid. Every random choice is seeded from the file's name, so the set is the same
on every machine with the same scikit-image photos.

Cache: ``$XDG_CACHE_HOME/varformer/demo`` (default ``~/.cache/varformer/demo``), or any folder given. The
manifest lists every file with its SHA-256 and the build parameters; a missing or corrupt file, or other
parameters, rebuild the set (into a temporary folder renamed into place, so an interrupted build leaves no half
set behind). Only a demo set is ever rebuilt: a folder marked as one (``varformer.files.MARKER_NAME``, written with
every build) or an unmarked build of an earlier version (its manifest and folders alone); any other non-empty
folder given as the cache is refused in one line and left as it is.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
import zlib
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np
from PIL import Image
from skimage import data as skimage_data

from varformer.data.degradations import DEGRADATIONS, motorcycle_depth
from varformer.data.image_io import write_image
from varformer.errors import DataError, OutputError
from varformer.files import (claim_folder, folder_entries, make_folder, mark_folder, read_json_or_none,
                             write_text_atomic)

DEMO_VERSION = 2
DEMO_TASKS = ("rain", "haze", "blur", "lowlight", "noise")
TEST_PHOTOS = ("astronaut", "coffee", "motorcycle")
TRAIN_PHOTOS = ("chelsea", "rocket", "hubble_deep_field", "immunohistochemistry", "retina")
NOISE_SIGMA = 25.0
DEMO_KIND = "demo set"      # the folder marker's kind (varformer.files.mark_folder)


@dataclass(frozen=True)
class DemoSpec:
    test_hw: Tuple[int, int] = (256, 320)   # test images (H, W): not square, so the full protocol tiles them
    train_hw: Tuple[int, int] = (288, 288)  # training patches: a little above the 256 crop
    test_per_photo: int = 2
    train_per_photo: int = 4

    def test_images(self) -> int:
        """Pairs per task in the test split."""
        return self.test_per_photo * len(TEST_PHOTOS)

    def to_json(self) -> Dict[str, object]:
        d = asdict(self)
        d["version"] = DEMO_VERSION
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def default_cache_dir() -> str:
    """``$VARFORMER_DEMO_CACHE``, else ``$XDG_CACHE_HOME/varformer/demo``, else ``~/.cache/varformer/demo``."""
    if os.environ.get("VARFORMER_DEMO_CACHE"):
        return os.path.expanduser(os.environ["VARFORMER_DEMO_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "varformer", "demo")


def _photo(name: str) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """(RGB uint8 photo, relative depth map or None)."""
    if name == "motorcycle":
        left, _, _ = skimage_data.stereo_motorcycle()
        return left, motorcycle_depth()
    return getattr(skimage_data, name)(), None


def _fit(img: np.ndarray, depth: Optional[np.ndarray], patch_h: int):
    """Downscale so the short side is at most twice the patch height (keeps scenes recognisable in patches)."""
    h, w = img.shape[:2]
    s = min(1.0, 2 * patch_h / min(h, w))
    if s >= 1.0:
        return img, depth
    size = (max(1, round(w * s)), max(1, round(h * s)))
    img = np.asarray(Image.fromarray(img).resize(size, Image.LANCZOS))
    if depth is not None:
        depth = np.asarray(Image.fromarray(depth.astype(np.float32), mode="F").resize(size, Image.BILINEAR))
    return img, depth


def _patches(img: np.ndarray, hw: Tuple[int, int], count: int) -> List[Tuple[int, int]]:
    """Top-left corners of up to ``count`` cells of a centred grid of ``hw`` cells, evenly spread."""
    H, W = img.shape[:2]
    ph, pw = hw
    if H < ph or W < pw:
        raise DataError(f"demo photo of {W}x{H} is smaller than the patch {pw}x{ph}")
    ny, nx = H // ph, W // pw
    y0, x0 = (H - ny * ph) // 2, (W - nx * pw) // 2
    cells = [(y0 + i * ph, x0 + j * pw) for i in range(ny) for j in range(nx)]
    pick = np.unique(np.round(np.linspace(0, len(cells) - 1, min(count, len(cells)))).astype(int))
    return [cells[k] for k in pick]


def _degrade(task: str, clean: np.ndarray, depth: Optional[np.ndarray], seed: int) -> np.ndarray:
    if task == "haze":
        return DEGRADATIONS["haze"](clean, seed, depth=depth)
    if task == "noise":
        return DEGRADATIONS["noise"](clean, seed, sigma=NOISE_SIGMA, quantize="round")
    return DEGRADATIONS[task](clean, seed)


def _save_png(path: str, img01: np.ndarray) -> None:
    write_image(path, np.clip(np.round(np.asarray(img01, np.float64) * 255.0), 0, 255).astype(np.uint8))


def _sha256(path: str) -> str:
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()


def build_demo(folder: str, spec: DemoSpec = DemoSpec()) -> Dict[str, object]:
    """Build the demo set into ``folder`` (must not exist); returns the manifest."""
    t0 = time.perf_counter()
    files: Dict[str, str] = {}
    for split, photos, hw, per in (("test", TEST_PHOTOS, spec.test_hw, spec.test_per_photo),
                                   ("train", TRAIN_PHOTOS, spec.train_hw, spec.train_per_photo)):
        for photo in photos:
            img, depth = _fit(*_photo(photo), max(hw))
            for k, (y, x) in enumerate(_patches(img, hw, per)):
                name = f"{photo}_{k}"
                clean = img[y:y + hw[0], x:x + hw[1]].astype(np.float32) / 255.0
                d = None if depth is None else np.clip(depth[y:y + hw[0], x:x + hw[1]], 0, None)
                if split == "train":  # stage 1 trains on clean images alone
                    rel = f"train/clean/{name}.png"
                    _save_png(os.path.join(folder, rel), clean)
                    files[rel] = _sha256(os.path.join(folder, rel))
                for task in DEMO_TASKS:
                    seed = zlib.crc32(f"demo/{split}/{task}/{name}".encode())
                    lq = _degrade(task, clean, d, seed)
                    for sub, im in (("input", lq), ("target", clean)):
                        rel = f"{split}/{task}/{sub}/{name}.png"
                        _save_png(os.path.join(folder, rel), im)
                        files[rel] = _sha256(os.path.join(folder, rel))
    manifest = {"spec": spec.to_json(), "files": files, "build_seconds": round(time.perf_counter() - t0, 3)}
    write_text_atomic(os.path.join(folder, "manifest.json"), json.dumps(manifest, indent=1, sort_keys=True))
    return manifest


def verify_demo(folder: str, spec: Optional[DemoSpec] = None) -> Optional[str]:
    """None if ``folder`` holds a complete, uncorrupted demo set (built with ``spec``, if given); else why not."""
    path = os.path.join(folder, "manifest.json")
    if not os.path.isfile(path):
        return "no manifest"
    try:
        with open(path) as fh:
            manifest = json.load(fh)
    except (OSError, ValueError) as e:
        return f"unreadable manifest ({e})"
    if (manifest.get("spec") or {}).get("version") != DEMO_VERSION:
        return "built by another version of this code"
    if spec is not None and manifest.get("spec") != spec.to_json():
        return "built with other parameters"
    for rel, digest in manifest.get("files", {}).items():
        p = os.path.join(folder, rel)
        if not os.path.isfile(p):
            return f"missing file {rel}"
        if _sha256(p) != digest:
            return f"corrupt file {rel}"
    return None if manifest.get("files") else "empty manifest"


def _earlier_build(folder: str) -> bool:
    """An unmarked folder holding what an earlier version built (before folder markers): a manifest of this
    module's layout, and nothing but the set's own entries."""
    entries = folder_entries(folder)
    if "manifest.json" not in entries or not set(entries) <= {"manifest.json", "test", "train"}:
        return False
    manifest = read_json_or_none(os.path.join(folder, "manifest.json"))
    return (isinstance(manifest, dict) and isinstance(manifest.get("spec"), dict) and "version" in manifest["spec"]
            and isinstance(manifest.get("files"), dict))


def ensure_demo(cache_dir: Optional[str] = None, spec: Optional[DemoSpec] = None, log=print) -> str:
    """The demo folder, built (or rebuilt) first if missing or corrupt, or built with other parameters than an
    explicitly given ``spec`` (``spec=None`` accepts any valid build, and builds the default one). A non-empty
    folder that is not a demo set is refused (``OutputError``), never emptied."""
    folder = os.path.abspath(cache_dir or default_cache_dir())
    problem = verify_demo(folder, spec)
    if problem is None:
        return folder
    state = claim_folder(folder, DEMO_KIND, "the demo set folder (--demo-cache, $VARFORMER_DEMO_CACHE)",
                         recognized=_earlier_build)
    if log and state in ("marked", "recognized"):
        log(f"demo set in {folder}: {problem}; rebuilding")
    parent = os.path.dirname(folder)
    make_folder(parent, "the demo set's parent folder")
    try:  # built beside the folder (the same file system: renamed into place), in a new folder: ours alone
        tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(folder)}.build-", dir=parent)
    except OSError as e:
        raise OutputError(f"cannot build the demo set beside {folder}: {e.strerror or e} in {parent}") from None
    try:
        mark_folder(tmp, DEMO_KIND)
        manifest = build_demo(tmp, spec or DemoSpec())
        if verify_demo(folder, spec) is None:  # another process finished first
            return folder
        if state == "empty":
            os.rmdir(folder)
        elif state != "new":  # a demo set (marked, or an earlier build): moved aside, then removed
            old = tempfile.mkdtemp(prefix=f".{os.path.basename(folder)}.old-", dir=parent)
            os.replace(folder, os.path.join(old, "set"))
            shutil.rmtree(old)
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone already when renamed into place
    if log:
        n = len(manifest["files"]) // 2
        log(f"built the demo set in {folder}: {n} pairs in {manifest['build_seconds']:.1f} s")
    return folder
