"""No-reference image-quality metrics and FID through pyiqa (an optional extra: ``pip install -e ".[nr]"``).

``varformer evaluate --metrics psnr ssim lpips musiq clipiqa maniqa niqe liqe qalign fid``: PSNR, SSIM and LPIPS are
ours (``varformer.metrics``); the others are pyiqa's (``pyiqa.create_metric(name, device=..., as_loss=False)``,
called on a (1, 3, H, W) image in [0, 1]; ``metric.lower_better``). FID compares two folders (the restored images
and the references of one benchmark): a value per set, not per image.

Weights: pyiqa downloads on first use, which an offline machine cannot. Before anything is restored,
``check_iqa_metrics`` names the first missing file in ONE line with where it goes and where to fetch it. Where each
file lives was read from pyiqa's source (0.1.13 to 0.1.16, the same in all): its own files in
``torch.hub.get_dir()/pyiqa`` (``$TORCH_HOME/hub/pyiqa``, default ``~/.cache/torch/hub/pyiqa``; fetched from the
Hugging Face repo ``chaofengc/IQA-PyTorch-Weights``), OpenAI's CLIP files in ``torch.hub.get_dir()/clip``, and
models pyiqa loads through timm or transformers in the Hugging Face cache (``$HF_HOME/hub``).

Tests replace pyiqa with a fake module (``sys.modules["pyiqa"]``): nothing here needs pyiqa at import time.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from varformer.errors import ConfigError, WeightsNotFoundError

PYIQA_REQUIREMENT = "pyiqa>=0.1.13,<0.2"
PYIQA_WEIGHTS_REPO = "chaofengc/IQA-PyTorch-Weights"
_CLIP_URLS = {  # OpenAI's CLIP release files, as pyiqa's clip_model.py names them (the hash is their SHA-256)
    "RN50.pt": "https://openaipublic.azureedge.net/clip/models/"
               "afeb0e10f9e5a86da6080e35cf09123aca3b358a0c3e3b6c78a7b63bc04b6762/RN50.pt",
    "ViT-B-32.pt": "https://openaipublic.azureedge.net/clip/models/"
                   "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af/ViT-B-32.pt",
}
BUILTIN_METRICS = ("psnr", "ssim", "lpips")


@dataclass(frozen=True)
class WeightFile:
    """One file a pyiqa metric reads. ``store``: ``pyiqa`` (pyiqa's cache), ``clip`` (its CLIP cache) or ``hf`` (a
    Hugging Face model repo in the hub cache; ``name`` is the repo id, ``file`` the file that must be there)."""
    store: str
    name: str
    file: str = ""

    def path(self) -> Optional[str]:
        """Where the file is, or None if it is not there."""
        if self.store == "hf":
            # imported here: huggingface_hub is only needed when a metric loads a model repo (start-up time)
            from huggingface_hub import constants, try_to_load_from_cache
            found = try_to_load_from_cache(self.name, self.file, cache_dir=constants.HF_HUB_CACHE)
            return found if isinstance(found, str) and os.path.isfile(found) else None
        p = self.expected_path()
        return p if os.path.isfile(p) else None

    def expected_path(self) -> str:
        if self.store == "hf":
            # imported here: start-up time, as in path()
            from huggingface_hub import constants
            return os.path.join(constants.HF_HUB_CACHE, "models--" + self.name.replace("/", "--"))
        return os.path.join(torch.hub.get_dir(), self.store, self.name)

    def how_to_get(self) -> str:
        if self.store == "hf":
            return (f"download the Hugging Face repo {self.name} into the hub cache {self.expected_path()} "
                    f"(huggingface-cli download {self.name}, on a machine online; copy $HF_HOME/hub across)")
        url = _CLIP_URLS[self.name] if self.store == "clip" else \
            f"https://huggingface.co/{PYIQA_WEIGHTS_REPO}/resolve/main/{self.name}"
        return (f"download {url} to {self.expected_path()} (pyiqa's cache, torch.hub.get_dir()/{self.store}; "
                f"$TORCH_HOME moves it)")


@dataclass(frozen=True)
class IqaMetric:
    name: str                       # the name --metrics takes
    pyiqa_name: str                 # pyiqa.create_metric's name (its default settings)
    lower_better: bool
    files: Tuple[WeightFile, ...]
    level: str = "image"            # "image": one score per image; "set": one per benchmark (FID: two folders)
    about: str = ""


def _pyiqa(name: str) -> WeightFile:
    return WeightFile("pyiqa", name)


IQA_METRICS: Dict[str, IqaMetric] = {m.name: m for m in [
    IqaMetric("musiq", "musiq", False, (_pyiqa("musiq_koniq_ckpt-e95806b9.pth"),),
              about="MUSIQ trained on KonIQ-10k (pyiqa's default 'musiq'), about 0-100"),
    IqaMetric("clipiqa", "clipiqa", False, (WeightFile("clip", "RN50.pt"),),
              about="CLIP-IQA with CLIP RN50 and pyiqa's prompt pairs, 0-1"),
    IqaMetric("maniqa", "maniqa", False,
              (_pyiqa("ckpt_koniq10k.pt"),
               WeightFile("hf", "timm/vit_base_patch8_224.augreg2_in21k_ft_in1k", "model.safetensors")),
              about="MANIQA trained on KonIQ-10k (pyiqa's default 'maniqa'; timm's ViT-B/8 is built first)"),
    IqaMetric("niqe", "niqe", True, (_pyiqa("niqe_modelparameters.mat"),),
              about="NIQE on Y (pyiqa's default), lower is better"),
    IqaMetric("liqe", "liqe", False, (_pyiqa("liqe_koniq.pt"), WeightFile("clip", "ViT-B-32.pt")),
              about="LIQE trained on KonIQ-10k, 1-5"),
    IqaMetric("qalign", "qalign", False, (WeightFile("hf", "q-future/one-align", "config.json"),),
              about="Q-Align (q-future/one-align through transformers; about 16 GB), 1-5"),
    IqaMetric("piqe", "piqe", True, (), about="PIQE: no learned weights, lower is better"),
    IqaMetric("fid", "fid", True, (_pyiqa("pt_inception-2015-12-05-6726825d.pth"),), level="set",
              about="FID (clean-fid's Inception features) between the restored images and the references of a set"),
]}
KNOWN_METRICS = BUILTIN_METRICS + tuple(IQA_METRICS)


def check_metric_names(names: Sequence[str]) -> Tuple[str, ...]:
    """``names`` lower-cased, duplicates dropped; ``ConfigError`` for an unknown one."""
    out = tuple(dict.fromkeys(n.lower() for n in names))
    unknown = [n for n in out if n not in KNOWN_METRICS]
    if unknown:
        raise ConfigError(f"unknown metric(s) {', '.join(unknown)} (known: {', '.join(KNOWN_METRICS)})")
    return out


def iqa_names(names: Sequence[str]) -> Tuple[str, ...]:
    return tuple(n for n in names if n in IQA_METRICS)


def import_pyiqa(names: Sequence[str]):
    """The pyiqa module, or one line saying how to install it."""
    try:
        # optional dependency: only the pyiqa metrics need it (the [nr] extra)
        import pyiqa
    except ImportError:
        raise ConfigError(f"metric(s) {', '.join(names)} need pyiqa, which is not installed: "
                          f"pip install -e \".[nr]\" (or pip install \"{PYIQA_REQUIREMENT}\")") from None
    return pyiqa


def missing_files(names: Sequence[str]) -> List[Tuple[str, WeightFile]]:
    """(metric, file) for every file the named metrics need that is not where pyiqa looks for it."""
    return [(n, f) for n in iqa_names(names) for f in IQA_METRICS[n].files if f.path() is None]


def check_iqa_metrics(names: Sequence[str]):
    """Before any work: pyiqa importable and every weight file present; else one line. Returns pyiqa (or None when
    no pyiqa metric is asked for)."""
    wanted = iqa_names(check_metric_names(names))
    if not wanted:
        return None
    pyiqa = import_pyiqa(wanted)
    missing = missing_files(wanted)
    if missing:
        metric, f = missing[0]
        more = f"; {len(missing) - 1} more missing ({', '.join(sorted({m for m, _ in missing[1:]}))})" \
            if len(missing) > 1 else ""
        raise WeightsNotFoundError(f"metric {metric} needs {f.name}{' (' + f.file + ')' if f.file else ''}: "
                                   f"{f.how_to_get()}{more}")
    return pyiqa


def pyiqa_version(pyiqa) -> str:
    return str(getattr(pyiqa, "__version__", "unknown"))


class IqaScorer:
    """The named pyiqa metrics, built once (weights loaded) on ``device``; ``per_image`` scores a batch image by
    image, ``per_set`` compares two folders (FID)."""

    def __init__(self, names: Sequence[str], device: torch.device | str = "cpu"):
        self.names = iqa_names(check_metric_names(names))
        pyiqa = check_iqa_metrics(self.names)
        self.version = pyiqa_version(pyiqa) if pyiqa is not None else ""
        self.device = torch.device(device)
        self.metrics: Dict[str, object] = {}
        for n in self.names:
            try:
                self.metrics[n] = pyiqa.create_metric(IQA_METRICS[n].pyiqa_name, device=self.device, as_loss=False)
            except ImportError as e:  # pyiqa 0.1.13's CLIP package imports pkg_resources (setuptools < 81)
                raise ConfigError(f"pyiqa could not build metric {n}: {e} (pip install -e \".[nr]\" installs what "
                                  f"pyiqa's metrics import, setuptools < 81 included)") from None
            except (OSError, RuntimeError, ValueError, AssertionError) as e:  # e.g. a download tried offline
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                files = ", ".join(f.expected_path() for f in IQA_METRICS[n].files) or "none"
                raise WeightsNotFoundError(f"pyiqa could not build metric {n} ({type(e).__name__}: {first}); "
                                           f"its files: {files}") from None
        # pyiqa's own flag decides the direction; ours is the fallback for a metric object without one
        self.lower_better = {n: bool(getattr(m, "lower_better", IQA_METRICS[n].lower_better))
                             for n, m in self.metrics.items()}

    @property
    def image_metrics(self) -> Tuple[str, ...]:
        return tuple(n for n in self.names if IQA_METRICS[n].level == "image")

    @property
    def set_metrics(self) -> Tuple[str, ...]:
        return tuple(n for n in self.names if IQA_METRICS[n].level == "set")

    def per_image(self, x_B3HW: torch.Tensor) -> Dict[str, List[float]]:
        """Each image-level metric on each image of a (B, 3, H, W) batch in [0, 1] (one call per image: metrics
        that crop or resize inside see one image as the authors' scripts pass it)."""
        x = x_B3HW.detach().float().clamp(0, 1).to(self.device)
        out: Dict[str, List[float]] = {}
        with torch.no_grad():
            for n in self.image_metrics:
                out[n] = [float(torch.as_tensor(self.metrics[n](x[i:i + 1])).reshape(-1)[0])
                          for i in range(x.shape[0])]
        return out

    def per_set(self, restored_dir: str, reference_dir: str, count: int) -> Dict[str, Optional[float]]:
        """Each set-level metric between two folders of ``count`` images (None below two images: no covariance)."""
        out: Dict[str, Optional[float]] = {}
        for n in self.set_metrics:
            if count < 2:
                out[n] = None
                continue
            with torch.no_grad():
                v = float(self.metrics[n](restored_dir, reference_dir, num_workers=0, verbose=False))
            out[n] = v if math.isfinite(v) else None
        return out
