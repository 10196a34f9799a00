"""Captions for the distillation's training images: ``varformer convert varestorer-captions FOLDER -o list.jsonl``
captions every clean image of a folder with BLIP-large (through the text cache: an image captioned once is never
captioned again) and writes Infinity's jsonl metadata (``image_path``, ``h_div_w``, ``text``, ``long_caption``,
``long_caption_type``), which ``data.root`` then names; ``--encode`` also fills the cache with the Flan-T5-XL
features of every caption, so training never loads T5.

What is captioned: each clean image as read (8-bit RGB, whole), not the 512 crop a sample takes from it (the crop
is its centre after a short-side resize). The release's inference captions the LQ input; which images its training
captioned is not known (docs/varestorer.md, "Training (reconstructed)").

    lines = caption_folder("data/LSDIR/HR", "data/LSDIR/captions.jsonl", TextCache(), BlipCaptioner(),
                           T5PromptEncoder())
"""
from __future__ import annotations

import argparse
import json
import os
from typing import List, Optional

from varformer.data.image_io import read_image, to_tensor
from varformer.data.roots import resolve_root
from varformer.data.sr_train import list_sr_sources
from varformer.errors import DataError
from varformer.files import write_text_atomic
from varformer.varestorer.config import VARestorerModelConfig
from varformer.varestorer.text import (BLIP_MODEL, T5_MODEL, BlipCaptioner, Captioner, PromptEncoder, T5PromptEncoder,
                                       TextCache, to_uint8_image)

CAPTION_TYPE = "blip-large"
BATCH = 8


def _listed_path(image: str, out_folder: str) -> str:
    """Relative to the list's folder when the image is under it (a movable data folder), else absolute."""
    rel = os.path.relpath(os.path.abspath(image), out_folder)
    return rel if not rel.startswith("..") else os.path.abspath(image)


def caption_folder(folder: str, out_jsonl: str, cache: TextCache, captioner: Captioner,
                   encoder: Optional[PromptEncoder] = None) -> List[str]:
    """Write ``out_jsonl`` for every image under ``folder`` (a path or a named source: ``demo:train/clean``);
    returns lines to print."""
    folder = resolve_root(folder)
    if not os.path.isdir(folder):
        raise DataError(f"{folder} is not a folder of clean images")
    sources = list_sr_sources(folder)
    out_folder = os.path.dirname(os.path.abspath(out_jsonl))
    entries, captions = [], []
    before = cache.misses
    for i in range(0, len(sources), BATCH):
        chunk = sources[i:i + BATCH]
        images = [to_uint8_image(to_tensor(read_image(s.path)[0])) for s in chunk]
        made = cache.captions(images, captioner)
        for s, img, c in zip(chunk, images, made):
            entries.append({"image_path": _listed_path(s.path, out_folder), "h_div_w": img.shape[0] / img.shape[1],
                            "text": c, "long_caption": "", "long_caption_type": CAPTION_TYPE})
            captions.append(c)
    captioned = cache.misses - before
    write_text_atomic(out_jsonl, "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in entries))
    lines = [f"{len(entries)} images of {folder}: {captioned} captioned now, {len(entries) - captioned} from the "
             f"cache {cache.folder}", f"wrote {out_jsonl}"]
    if encoder is not None:
        before = cache.misses
        unique = list(dict.fromkeys(captions))
        for i in range(0, len(unique), 64):
            cache.prompt_features(unique[i:i + 64], encoder)
        lines.append(f"{len(unique)} distinct captions' features in the cache ({cache.misses - before} encoded now)")
    return lines


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = VARestorerModelConfig()
    parser.add_argument("--encode", action="store_true", help="also put every caption's T5 features in the cache")
    parser.add_argument("--text-cache", default=d.text_cache, help="the text cache folder (default: the model's)")
    parser.add_argument("--caption-model", default=BLIP_MODEL, help=f"default {BLIP_MODEL}")
    parser.add_argument("--text-model", default=T5_MODEL, help=f"default {T5_MODEL}")
    parser.add_argument("--device", default=d.text_device, help="where BLIP / T5 run (default auto)")
    parser.add_argument("--dtype", default=d.text_dtype, help="auto: float16 on CUDA (the release), else float32")
    parser.add_argument("--local-files-only", action="store_true", help="never reach the hub, only its cache")


def run(args) -> List[str]:
    cache = TextCache(args.text_cache)
    blip = BlipCaptioner(args.caption_model, local_files_only=args.local_files_only, device=args.device,
                         dtype=args.dtype)
    t5 = (T5PromptEncoder(args.text_model, local_files_only=args.local_files_only, device=args.device,
                          dtype=args.dtype) if args.encode else None)
    return caption_folder(args.checkpoint, args.output, cache, blip, t5)
