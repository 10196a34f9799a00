"""Where code runs and in which precision: the one device resolver and the one precision policy of the package.

    dev = resolve_device("auto")              # cuda (cuda:LOCAL_RANK under torchrun) when available, else cpu
    prec = resolve_precision("auto", dev)     # bf16 where the hardware computes bf16 natively, else fp32
    with autocast(dev, prec):                 # "fp32": nothing; "bf16": torch.autocast(dev.type, bfloat16)
        ...
        with fp32_region(dev):                # parts that must stay float32 under any autocast (tokenizer,
            ...                               # code search, logits, softmax-weight heads)

Every command, the trainer, the restorer and the benchmarks go through these, so "auto", "bf16" and "fp32" mean
the same thing everywhere (docs/precision.md).
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import platform
import warnings
from typing import Dict, Union

import torch

from varformer.errors import ConfigError

PRECISIONS = ("fp32", "bf16")
PRECISION_CHOICES = ("auto",) + PRECISIONS
DeviceLike = Union[str, torch.device]


# ---------------------------------------------------------------------------------------------------------------
# Devices
# ---------------------------------------------------------------------------------------------------------------
def resolve_device(device: DeviceLike = "auto", local_rank: int = 0) -> torch.device:
    """``auto`` -> ``cuda:local_rank`` when CUDA is available, else ``cpu``; ``cuda`` -> ``cuda:local_rank``;
    anything else as torch spells it (``cpu``, ``cuda:1``, ``meta``). A CUDA device without CUDA is an error."""
    name = str(device)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(name)
    except RuntimeError as e:
        raise ConfigError(f"unknown device {name!r} ({e}); use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {name!r} requested but CUDA is not available here; use cpu or auto")
        if dev.index is None:
            dev = torch.device("cuda", local_rank)
    return dev


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's model name (from /proc/cpuinfo where there is one)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def synchronize(device: DeviceLike) -> None:
    """Wait for the device's queued work (a no-op on the CPU): timings start and end here."""
    dev = torch.device(device) if not isinstance(device, torch.device) else device
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


# ---------------------------------------------------------------------------------------------------------------
# Precision
# ---------------------------------------------------------------------------------------------------------------
def cpu_features() -> Dict[str, bool]:
    """The bf16-relevant x86 flags of this CPU from /proc/cpuinfo (empty off Linux/x86)."""
    try:
        with open("/proc/cpuinfo") as fh:
            flags = set(next((line.split(":", 1)[1].split() for line in fh if line.startswith("flags")), []))
    except OSError:
        return {}
    return {f: f in flags for f in ("avx512f", "avx512_bf16", "amx_bf16", "amx_tile")}


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 matmuls natively: a CUDA GPU with bf16 support, or a CPU with AVX-512 BF16
    or AMX. Elsewhere bf16 is emulated and several times slower than fp32 (docs/precision.md)."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        flags = cpu_features()
        return bool(flags.get("avx512_bf16") or flags.get("amx_bf16"))
    return False


def check_precision(precision: str, allow_auto: bool = True) -> str:
    choices = PRECISION_CHOICES if allow_auto else PRECISIONS
    if precision not in choices:
        raise ConfigError(f"precision must be one of {', '.join(choices)}, got {precision!r}")
    return precision


def resolve_precision(precision: str, device: torch.device, warn: bool = True) -> str:
    """``auto`` -> ``bf16`` where the device has native bf16, else ``fp32``. An explicit ``bf16`` on a device
    without native bf16 is kept, with a warning (it is slower than fp32 there)."""
    check_precision(precision)
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    if precision == "bf16" and warn and device.type == "cpu" and not native_bf16(device):
        warnings.warn("precision bf16 on a CPU without native bf16 (no AVX-512 BF16, no AMX): bf16 is emulated "
                      "there and measured 4.6x slower than fp32 at full size; use fp32 or auto", RuntimeWarning,
                      stacklevel=2)
    return precision


_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(device: torch.device, precision: str):
    """The autocast context of a precision: nothing for ``fp32``, bf16 autocast for ``bf16`` (``fp16`` exists for
    the backbone benchmark only; the models and the trainer take fp32 or bf16)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision not in _AUTOCAST_DTYPES:
        raise ConfigError(f"precision must be one of fp32, bf16, fp16, got {precision!r}")
    return torch.autocast(device_type=device.type, dtype=_AUTOCAST_DTYPES[precision])


def fp32_region(device: Union[torch.device, str]):
    """Autocast disabled on CPU/CUDA, so the enclosed code runs in float32 under any caller autocast; a no-op on
    other devices (the meta device used for FLOP counting has no autocast)."""
    device_type = device.type if isinstance(device, torch.device) else str(device)
    if device_type in ("cpu", "cuda"):
        return torch.autocast(device_type=device_type, enabled=False)
    return contextlib.nullcontext()


# ---------------------------------------------------------------------------------------------------------------
# CPU memory
# ---------------------------------------------------------------------------------------------------------------
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4   # glibc mallopt parameters


def keep_freed_memory() -> bool:
    """Make glibc's malloc keep freed memory for reuse: large blocks come from the heap instead of fresh ``mmap``s
    and freed memory is not handed back to the system. Every large temporary of a forward pass (tens of MB at
    256x256) otherwise arrives as untouched pages, and the kernel writing it pays a page fault per 4 KiB
    (docs/precision.md: 7-10% of a full-size CPU forward). The process keeps its peak memory instead of returning
    it between calls. Linux with glibc only; ``VARFORMER_MALLOC=system`` leaves malloc alone. Returns whether the
    setting applied. The commands call it once at start."""
    if os.environ.get("VARFORMER_MALLOC", "").lower() == "system" or platform.system() != "Linux":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl, ...): nothing to tune
        return False
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2 ** 31 - 1))
