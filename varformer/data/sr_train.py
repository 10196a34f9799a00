"""Real-world super-resolution training data made on the fly from clean images (VARestorer's distillation;
docs/varestorer.md, "Training (reconstructed)"): each sample is a clean image resized (Lanczos) so its short side is
the crop size and centre-cropped, flipped horizontally with probability 0.5, and degraded by
``varformer.data.sr_degradations`` into an LQ image of the same size, with a caption.

Sources (``list_sr_sources``):
- a folder of clean images (searched recursively);
- Infinity's metadata format: a ``.jsonl`` file, or a folder of them (``{h_div_w}_{count}.jsonl`` splits), one
  JSON object per line with ``image_path`` (absolute, or relative to the jsonl file's folder), ``text`` (a short
  caption) and optionally ``long_caption``, ``long_caption_type``, ``h_div_w``.

Captions (``caption_source``): ``fixed`` (one prompt for every image), ``captions`` (a mapping image path ->
caption given by the caller, e.g. a BLIP caption cache) or ``jsonl`` (Infinity's rule: the short ``text`` with
probability ``short_caption_prob``, else a random prefix of whole sentences of ``long_caption``).

Determinism: every random choice of a sample (flip, degradation, caption) comes from a generator seeded by
``(seed, sample id)``; the image is ``sources[id % len]``, so a shuffled sampler covers every image once per
nominal epoch.

    ds = SRTrainingDataset(list_sr_sources("data/LSDIR"), size=512, caption_source="fixed", fixed_prompt="")
    item = ds[0]          # {"lq": (3, 512, 512), "gt": (3, 512, 512) in [0, 1], "caption": str, "name": str}
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np
from torch.utils.data import Dataset

from varformer.data.image_io import is_image_file, read_image, to_tensor
from varformer.data.sr_degradations import SRDegradationSettings, degrade_sr
from varformer.data.train_sets import resize_short_side, sample_rng
from varformer.errors import DataError

CAPTION_SOURCES = ("fixed", "captions", "jsonl")


@dataclass(frozen=True)
class SRSource:
    path: str                         # the clean image
    text: str = ""                    # Infinity jsonl: the short caption
    long_caption: str = ""            # Infinity jsonl: the long caption (sentences)


def _jsonl_files(root: str) -> List[str]:
    if os.path.isfile(root):
        return [root] if root.endswith(".jsonl") else []
    return sorted(os.path.join(root, f) for f in os.listdir(root) if f.endswith(".jsonl"))


def read_infinity_jsonl(path: str) -> List[SRSource]:
    """The images of one Infinity metadata file; a line without ``image_path`` or not JSON is an error naming it."""
    folder = os.path.dirname(os.path.abspath(path))
    out = []
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{n}: not a JSON object ({e.msg})") from None
            if not isinstance(obj, dict) or not isinstance(obj.get("image_path"), str):
                raise DataError(f"{path}:{n}: no 'image_path' (Infinity's metadata format: image_path, h_div_w, "
                                "text, long_caption, long_caption_type)")
            image = obj["image_path"]
            image = image if os.path.isabs(image) else os.path.join(folder, image)
            out.append(SRSource(image, str(obj.get("text") or ""), str(obj.get("long_caption") or "")))
    return out


def list_sr_sources(root: str) -> List[SRSource]:
    """Clean images of ``root``: a jsonl file, a folder of jsonl files, or a folder of images (recursively)."""
    if not root or not os.path.exists(root):
        raise DataError(f"training data not found: {root!r} (a folder of clean images, an Infinity metadata "
                        ".jsonl file or a folder of them)")
    files = _jsonl_files(root)
    if files:
        sources = [s for f in files for s in read_infinity_jsonl(f)]
        missing = [s.path for s in sources if not os.path.isfile(s.path)]
        if missing:
            raise DataError(f"{len(missing)} images named in {root} do not exist, e.g. {missing[0]}")
    elif os.path.isdir(root):
        sources = [SRSource(os.path.join(d, f)) for d, dirs, names in sorted(os.walk(root))
                   for f in sorted(names) if is_image_file(f)]
    else:
        raise DataError(f"{root} is neither a folder nor an Infinity metadata .jsonl file")
    if not sources:
        raise DataError(f"no clean images under {root}")
    return sources


def sentence_prefix_caption(source: SRSource, rng: np.random.Generator, short_prob: float) -> str:
    """Infinity's caption choice: the short text with probability ``short_prob`` (or when there is no long caption),
    else the first k of the long caption's n sentences, k uniform in 1..n."""
    take_short = rng.random() < short_prob
    sentences = [s for s in re.split(r"(?<=[.!?])\s+", source.long_caption.strip()) if s]
    if take_short and source.text or not sentences:
        return source.text
    k = int(rng.integers(1, len(sentences) + 1))
    return " ".join(sentences[:k])


def centre_crop(img_HW3: np.ndarray, size: int) -> np.ndarray:
    h, w = img_HW3.shape[:2]
    if h < size or w < size:
        raise DataError(f"image of {w}x{h} is smaller than the {size} crop")
    y, x = (h - size) // 2, (w - size) // 2
    return img_HW3[y:y + size, x:x + size]


class SRTrainingDataset(Dataset):
    unbounded_ids = True  # any non-negative sample id: it seeds the sample (varformer.training.sampling)

    def __init__(self, sources: Sequence[SRSource], size: int = 512, resize_short: int = 0, flip: bool = True,
                 seed: int = 0, degradation: Optional[SRDegradationSettings] = None, caption_source: str = "fixed",
                 fixed_prompt: str = "", captions: Optional[Mapping[str, str]] = None,
                 short_caption_prob: float = 0.2):
        if not sources:
            raise DataError("SR training data: no clean images")
        if caption_source not in CAPTION_SOURCES:
            raise DataError(f"caption source must be one of {CAPTION_SOURCES}, got {caption_source!r}")
        if resize_short and resize_short < size:
            raise DataError(f"resize_short {resize_short} is below the crop size {size}")
        self.sources = list(sources)
        self.size, self.resize_short, self.flip, self.seed = size, resize_short or size, flip, seed
        self.degradation = (degradation or SRDegradationSettings()).validate()
        self.caption_source, self.fixed_prompt = caption_source, fixed_prompt
        self.short_caption_prob = short_caption_prob
        self.captions: Dict[str, str] = dict(captions or {})
        if caption_source == "captions":
            missing = [s.path for s in self.sources if s.path not in self.captions]
            if missing:
                raise DataError(f"{len(missing)} of {len(self.sources)} training images have no caption, e.g. "
                                f"{missing[0]}: build the caption cache for this data (or use a fixed prompt)")
        if caption_source == "jsonl" and not any(s.text or s.long_caption for s in self.sources):
            raise DataError("caption source 'jsonl' needs Infinity metadata with 'text' / 'long_caption'; these "
                            "images have none")

    def __len__(self) -> int:
        return len(self.sources)

    def caption(self, source: SRSource, rng: np.random.Generator) -> str:
        if self.caption_source == "fixed":
            return self.fixed_prompt
        if self.caption_source == "captions":
            return self.captions[source.path]
        return sentence_prefix_caption(source, rng, self.short_caption_prob)

    def __getitem__(self, sample_id: int) -> Dict[str, object]:
        rng = sample_rng(self.seed, sample_id)
        source = self.sources[sample_id % len(self.sources)]
        img, _ = read_image(source.path)
        gt = centre_crop(resize_short_side(img, self.resize_short), self.size)
        if self.flip and rng.random() < 0.5:
            gt = gt[:, ::-1]
        gt = np.ascontiguousarray(gt, dtype=np.float32)
        lq, _ = degrade_sr(gt, rng, self.degradation)
        return {"lq": to_tensor(lq), "gt": to_tensor(gt), "caption": self.caption(source, rng),
                "name": os.path.splitext(os.path.basename(source.path))[0]}
