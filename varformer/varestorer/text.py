"""VARestorer's text: prompt features (Flan-T5-XL rows) and captions (BLIP-large), each kept in an on-disk cache so
the text models (T5-XL: 11 GB) are loaded only to fill it.

    cache = TextCache("~/.cache/varformer/varestorer-text")          # the folder carries a marker file
    t5 = T5PromptEncoder("google/flan-t5-xl", local_files_only=True)  # nothing loaded yet
    feats = cache.prompt_features(["a photo of a dog"], t5)          # [(L_i, 2048) float32]; T5 loaded on a miss only
    blip = BlipCaptioner()                                           # Salesforce/blip-image-captioning-large
    caps = cache.captions([lq_uint8_HW3], blip)                      # BLIP's default generate, per image

What the release computes (official tools/run_varestorer.py ``encode_prompt``, tools/infer4eval.py):

- prompt features: the T5 tokenizer pads to ``max_length=512`` (``padding='max_length'``, truncation), the encoder's
  ``last_hidden_state`` in float32, and of row i its first ``attention_mask[i].sum()`` rows (the prompt's tokens
  and ``</s>``): one ``(L_i, 2048)`` tensor per prompt, what ``VARestorer`` takes as ``text``. The release runs T5
  in float16 on CUDA; ``dtype="auto"`` does so on CUDA and uses float32 elsewhere (CPU half matmuls are slow or
  missing); the precision is part of the cache key, as numbers differ;
- captions: BLIP-large (float16 on CUDA in the release) on the low-quality image as read (``Image.open(path)
  .convert('RGB')``), ``generate`` with the model's defaults, decoded without special tokens.

Cache entries: ``prompts/<hh>/<sha256>.safetensors`` (one tensor ``features`` + the prompt and the encoder in the
metadata) keyed by the encoder's ``identity`` (model, max length, precision) and the prompt;
``captions/<hh>/<sha256>.json`` keyed by the captioner's identity and the image's content: the SHA-256 of its 8-bit
RGB pixels and size (so the caption of a file and of the same pixels read elsewhere is one entry). Entries are
written atomically (``varformer.files``); an unreadable entry is recomputed. The folder's marker
(``.varformer-text-cache``) keeps a cache from being mixed into a folder of other files.

``transformers`` is an optional dependency (``pip install -e ".[varestorer]"``); without it, or offline without
the model in the Hugging Face cache, the first miss raises one line naming the model and the ``hf download``
command. Encoders and captioners are anything with ``identity`` and ``encode(prompts)`` / ``caption(images)``:
tests pass tiny random ones (``from_modules``).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable, List, Optional, Protocol, Sequence

import numpy as np
import torch

from varformer.errors import ConfigError, WeightsNotFoundError
from varformer.files import read_safetensors, save_safetensors_atomic, write_text_atomic
from varformer.runtime import resolve_device

T5_MODEL = "google/flan-t5-xl"
BLIP_MODEL = "Salesforce/blip-image-captioning-large"
T5_MAX_LENGTH = 512
CACHE_MARKER = ".varformer-text-cache"
CACHE_VERSION = 1
INSTALL_HINT = 'pip install -e ".[varestorer]" (or pip install transformers)'


class PromptEncoder(Protocol):
    identity: str                        # the encoder's part of a cache key (model, max length, precision)

    def encode(self, prompts: Sequence[str]) -> List[torch.Tensor]:
        """One (L_i, C) float32 CPU tensor per prompt."""


class Captioner(Protocol):
    identity: str

    def caption(self, images_HW3: Sequence[np.ndarray]) -> List[str]:
        """One caption per 8-bit RGB image (H, W, 3)."""


def default_cache_dir() -> Path:
    """``$VARFORMER_CACHE/varestorer-text``, else ``$XDG_CACHE_HOME/varformer/varestorer-text``, else
    ``~/.cache/varformer/varestorer-text``."""
    if os.environ.get("VARFORMER_CACHE"):
        return Path(os.environ["VARFORMER_CACHE"]).expanduser() / "varestorer-text"
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "varformer" / "varestorer-text"


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """``auto``: float16 on CUDA (the release), float32 elsewhere; or ``float16`` / ``bfloat16`` / ``float32``."""
    names = {"float16": torch.float16, "fp16": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
             "float32": torch.float32, "fp32": torch.float32}
    if dtype == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if dtype not in names:
        raise ConfigError(f"text model dtype must be auto, float16, bfloat16 or float32, got {dtype!r}")
    return names[dtype]


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def _import_transformers(model_name: str):
    try:
        import transformers  # optional dependency: only the text models need it
    except ImportError:
        raise WeightsNotFoundError(f"the text model {model_name} runs through transformers, which is not installed: "
                                   f"{INSTALL_HINT}") from None
    return transformers


def _pretrained(model_name: str, local_files_only: bool, load: Callable[[Any], Any]) -> Any:
    """``load(transformers)``, with transformers' "not found / not cached / no connection" errors as one line."""
    tf = _import_transformers(model_name)
    try:
        return load(tf)
    except (OSError, ValueError) as e:
        raise missing_model(model_name, local_files_only, e) from None


def missing_model(model_name: str, local_files_only: bool, exc: BaseException) -> WeightsNotFoundError:
    """One line: which model is missing and the command that fetches it."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    where = "not in the Hugging Face cache (offline)" if local_files_only else "could not be loaded"
    return WeightsNotFoundError(f"the text model {model_name} is {where}: download it with `hf download "
                                f"{model_name}` (huggingface-cli download with huggingface_hub < 1.0) or give a "
                                f"folder holding it ({type(exc).__name__}: {first})")


# ---------------------------------------------------------------------------------------------------------------
# The models
# ---------------------------------------------------------------------------------------------------------------
class T5PromptEncoder:
    """Flan-T5-XL's encoder as the release runs it; the model is loaded on the first ``encode``."""

    def __init__(self, model_name: str = T5_MODEL, *, local_files_only: bool = False, device: str = "auto",
                 dtype: str = "auto", max_length: int = T5_MAX_LENGTH, batch_size: int = 4):
        if max_length < 1 or batch_size < 1:
            raise ConfigError(f"max_length and batch_size must be >= 1, got {max_length}, {batch_size}")
        self.model_name, self.local_files_only = model_name, local_files_only
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.max_length, self.batch_size = max_length, batch_size
        self.tokenizer: Any = None
        self.model: Any = None

    @classmethod
    def from_modules(cls, model, tokenizer, model_name: str, max_length: int = T5_MAX_LENGTH,
                     batch_size: int = 4) -> "T5PromptEncoder":
        """An encoder around a model and tokenizer already built (tests: a tiny random T5)."""
        p = next(model.parameters())
        enc = cls(model_name, device=str(p.device), dtype=_dtype_name(p.dtype), max_length=max_length,
                  batch_size=batch_size)
        enc.model, enc.tokenizer = model.eval(), tokenizer
        return enc

    @property
    def identity(self) -> str:
        return f"t5-encoder {self.model_name} max_length={self.max_length} {_dtype_name(self.dtype)}"

    @property
    def loaded(self) -> bool:
        return self.model is not None

    def load(self) -> None:
        if self.loaded:
            return
        name, local = self.model_name, self.local_files_only
        # legacy=True: the tokenizer as Infinity's load_tokenizer builds it
        self.tokenizer, model = _pretrained(name, local, lambda tf: (
            tf.AutoTokenizer.from_pretrained(name, legacy=True, local_files_only=local),
            tf.T5EncoderModel.from_pretrained(name, local_files_only=local)))
        self.model = model.to(device=self.device, dtype=self.dtype).eval().requires_grad_(False)

    @torch.no_grad()
    def encode(self, prompts: Sequence[str]) -> List[torch.Tensor]:
        self.load()
        out: List[torch.Tensor] = []
        for i in range(0, len(prompts), self.batch_size):
            chunk = list(prompts[i:i + self.batch_size])
            tokens = self.tokenizer(chunk, max_length=self.max_length, padding="max_length", truncation=True,
                                    return_tensors="pt")
            mask = tokens["attention_mask"].to(self.device)
            hidden = self.model(input_ids=tokens["input_ids"].to(self.device),
                                attention_mask=mask)["last_hidden_state"].float()       # (b, max_length, C)
            lens = mask.sum(dim=-1).tolist()
            out += [hidden[j, :n].cpu().contiguous() for j, n in enumerate(lens)]
        return out


class BlipCaptioner:
    """BLIP-large captions as the release's benchmark driver makes them; the model is loaded on the first call."""

    def __init__(self, model_name: str = BLIP_MODEL, *, local_files_only: bool = False, device: str = "auto",
                 dtype: str = "auto"):
        self.model_name, self.local_files_only = model_name, local_files_only
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.model: Any = None
        self.image_processor: Any = None
        self.tokenizer: Any = None

    @classmethod
    def from_modules(cls, model, image_processor, tokenizer, model_name: str) -> "BlipCaptioner":
        p = next(model.parameters())
        cap = cls(model_name, device=str(p.device), dtype=_dtype_name(p.dtype))
        cap.model, cap.image_processor, cap.tokenizer = model.eval(), image_processor, tokenizer
        return cap

    @property
    def identity(self) -> str:
        return f"blip-caption {self.model_name} {_dtype_name(self.dtype)}"

    @property
    def loaded(self) -> bool:
        return self.model is not None

    def load(self) -> None:
        if self.loaded:
            return
        name, local = self.model_name, self.local_files_only
        processor, model = _pretrained(name, local, lambda tf: (
            tf.BlipProcessor.from_pretrained(name, local_files_only=local),
            tf.BlipForConditionalGeneration.from_pretrained(name, local_files_only=local)))
        self.image_processor, self.tokenizer = processor.image_processor, processor.tokenizer
        self.model = model.to(device=self.device, dtype=self.dtype).eval().requires_grad_(False)

    @torch.no_grad()
    def caption(self, images_HW3: Sequence[np.ndarray]) -> List[str]:
        # start-up time: Pillow only when captioning
        from PIL import Image
        self.load()
        out = []
        for img in images_HW3:  # one image per call, as the release
            pixels = self.image_processor(images=Image.fromarray(img), return_tensors="pt")["pixel_values"]
            ids = self.model.generate(pixel_values=pixels.to(self.device, self.dtype))
            out.append(self.tokenizer.decode(ids[0], skip_special_tokens=True).strip())
        return out


# ---------------------------------------------------------------------------------------------------------------
# The cache
# ---------------------------------------------------------------------------------------------------------------
def prompt_key(identity: str, prompt: str) -> str:
    return hashlib.sha256(f"{identity}\n{prompt}".encode("utf-8")).hexdigest()


def image_digest(img_HW3: np.ndarray) -> str:
    """SHA-256 of an 8-bit RGB image's size and pixels."""
    img = np.ascontiguousarray(img_HW3)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ConfigError(f"captions are made from 8-bit RGB images (H, W, 3), got {img.dtype} {img.shape}")
    h = hashlib.sha256(f"{img.shape[0]}x{img.shape[1]}\n".encode())
    h.update(img.tobytes())
    return h.hexdigest()


def to_uint8_image(x_3HW: torch.Tensor) -> np.ndarray:
    """(3, H, W) in [0, 1] -> (H, W, 3) uint8 by rounding (exact for images read from 8-bit files)."""
    return x_3HW.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()


class TextCache:
    """Prompt features and captions on disk (module doc). The folder is created with its marker; an existing
    folder must be empty or carry the marker."""

    def __init__(self, folder: str | os.PathLike | None = None):
        self.folder = Path(folder).expanduser() if folder is not None else default_cache_dir()
        self.hits = 0
        self.misses = 0
        self._open()

    def _open(self) -> None:
        marker = self.folder / CACHE_MARKER
        if self.folder.exists() and not self.folder.is_dir():
            raise ConfigError(f"text cache {self.folder} is a file; give a folder")
        if marker.is_file():
            try:
                info = json.loads(marker.read_text())
            except (OSError, json.JSONDecodeError):
                info = {}
            if info.get("version") != CACHE_VERSION:
                raise ConfigError(f"{self.folder} is a text cache of another version ({info.get('version')!r}, "
                                  f"this one writes {CACHE_VERSION}); give another folder or empty this one")
            return
        if self.folder.is_dir() and any(self.folder.iterdir()):
            raise ConfigError(f"{self.folder} holds other files and no {CACHE_MARKER} marker: it is not a text "
                              "cache; give an empty or new folder")
        try:
            write_text_atomic(marker, json.dumps({"kind": "varformer VARestorer text cache",
                                                  "version": CACHE_VERSION}) + "\n")
        except OSError as e:
            raise ConfigError(f"cannot create the text cache {self.folder}: {e.strerror or e}") from None

    # -- prompts ---------------------------------------------------------------------------------------------------
    def prompt_path(self, identity: str, prompt: str) -> Path:
        key = prompt_key(identity, prompt)
        return self.folder / "prompts" / key[:2] / f"{key}.safetensors"

    def _read_features(self, path: Path, identity: str, prompt: str) -> Optional[torch.Tensor]:
        if not path.is_file():
            return None
        try:
            tensors, meta = read_safetensors(path)
        except Exception:  # an unreadable entry is recomputed
            return None
        if meta.get("prompt") != prompt or meta.get("encoder") != identity or "features" not in tensors:
            return None
        return tensors["features"]

    def prompt_features(self, prompts: Sequence[str], encoder: PromptEncoder) -> List[torch.Tensor]:
        """One (L_i, C) float32 tensor per prompt: read from the cache, the misses encoded in one call and
        stored."""
        if isinstance(prompts, str):
            raise ConfigError("prompt_features takes a list of prompts")
        identity = encoder.identity
        found = {p: self._read_features(self.prompt_path(identity, p), identity, p) for p in dict.fromkeys(prompts)}
        missing = [p for p, f in found.items() if f is None]
        self.hits += len(found) - len(missing)
        self.misses += len(missing)
        if missing:
            features = encoder.encode(missing)
            if len(features) != len(missing):
                raise RuntimeError(f"the text encoder returned {len(features)} results for {len(missing)} prompts")
            for p, f in zip(missing, features):
                f = f.detach().float().cpu().contiguous()
                save_safetensors_atomic({"features": f}, self.prompt_path(identity, p),
                                        metadata={"prompt": p, "encoder": identity})
                found[p] = f
        return [found[p] for p in prompts]

    # -- captions --------------------------------------------------------------------------------------------------
    def caption_path(self, identity: str, digest: str) -> Path:
        key = hashlib.sha256(f"{identity}\n{digest}".encode("utf-8")).hexdigest()
        return self.folder / "captions" / key[:2] / f"{key}.json"

    def captions(self, images_HW3: Sequence[np.ndarray], captioner: Captioner) -> List[str]:
        """One caption per 8-bit RGB image: read from the cache, the misses captioned and stored."""
        identity = captioner.identity
        digests = [image_digest(img) for img in images_HW3]
        found = {}
        for d in dict.fromkeys(digests):
            path = self.caption_path(identity, d)
            try:
                entry = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
            except (OSError, json.JSONDecodeError):
                entry = None
            ok = isinstance(entry, dict) and entry.get("image") == d and entry.get("captioner") == identity
            found[d] = entry["caption"] if ok and isinstance(entry.get("caption"), str) else None
        missing = [d for d, c in found.items() if c is None]
        self.hits += len(found) - len(missing)
        self.misses += len(missing)
        if missing:
            first = {d: img for d, img in zip(digests, images_HW3) if d in missing}
            made = captioner.caption([first[d] for d in missing])
            for d, c in zip(missing, made):
                write_text_atomic(self.caption_path(identity, d),
                                  json.dumps({"caption": c, "captioner": identity, "image": d}) + "\n")
                found[d] = c
        return [found[d] for d in digests]
