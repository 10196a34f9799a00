"""The measurement helpers every benchmark uses (``varformer benchmark backbone|model|train``): timing, the
matmul roofline, FLOP counting, peak memory and part timing.

- ``interleaved_timings(fns, device)``: several calls timed in alternation (A B A B ...), median wall and
  process-CPU seconds each, the first timed call inside the peak-memory probe; ``time_fn`` for one call.
- ``matmul_roofline(device, dtype)``: achieved GFLOP/s of an n x n matmul (the faster of ``torch.mm`` and
  ``ops.linear``, best of a few runs, per wall and per CPU second), the practical compute roofline to read a
  model's achieved GFLOP/s against.
- ``count_flops(fn, *args)``: FLOPs of one call, counted op by op by this module's own counter (``op_flops``:
  matmuls, convolutions, attention; a multiply-add counts 2; elementwise ops are not counted); ``flops_by_group``
  splits them over groups of modules.
- ``measure_peak_memory(fn, device)``: peak memory in bytes while ``fn`` runs. CUDA: the caching allocator's peak
  of allocated tensor memory (``torch.cuda.max_memory_allocated`` after a reset). CPU: the peak resident set
  size of the whole process (Linux ``VmHWM``, reset through ``/proc/self/clear_refs`` before the call), so it
  includes the interpreter, libraries and the weights already loaded; subtract ``current_memory('cpu')`` taken
  before the call for the extra memory of ``fn``. Where the peak cannot be reset, the RSS is sampled every
  millisecond by a thread instead (short spikes may be missed).
- ``peak_tensor_bytes(fn)``: on any device, the peak bytes of tensor storage allocated while ``fn`` runs and still
  alive, tracked op by op (a ``TorchDispatchMode``; slow, for measurement runs only). Added to the bytes of the
  tensors that exist before (``tensor_bytes(model)``), it is what CUDA's ``max_memory_allocated`` reports, so a CPU
  run gives the figure a GPU would, without the interpreter and libraries the process RSS includes.
- ``range_seconds(fn, names, device)``: seconds spent inside the ``torch.profiler.record_function`` ranges a model
  marks its parts with (one profiled call); the model is not modified.
- ``process_settings(threads=..., allow_tf32=...)``: the one place a benchmark changes a process-wide setting (CPU
  threads, TF32 matmuls, the global random state); everything is restored on leaving.
"""
from __future__ import annotations

import contextlib
import math
import os
import re
import threading
import time
import weakref
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, Iterator, Optional, Sequence, Tuple

import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from varformer import ops
from varformer.runtime import cpu_features, device_name, resolve_device, synchronize


@contextlib.contextmanager
def process_settings(threads: Optional[int] = None, allow_tf32: Optional[bool] = None) -> Iterator[None]:
    """Process-wide settings for a benchmark, all restored on leaving (also on an error): torch's CPU threads
    (``threads``; None: unchanged), TF32 in CUDA matmuls and cuDNN convolutions (``allow_tf32``; False: fp32 means
    fp32) and the global random state of the CPU and every CUDA device (a benchmark seeds it to build its models)."""
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    saved_threads = torch.get_num_threads()
    saved_tf32 = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    cuda_devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    try:
        with torch.random.fork_rng(devices=cuda_devices):
            if threads is not None:
                torch.set_num_threads(threads)  # on a busy machine fewer threads avoid stalls at OpenMP barriers
            if allow_tf32 is not None:
                torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = bool(allow_tf32)
            yield
    finally:
        torch.set_num_threads(saved_threads)
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved_tf32


# ---------------------------------------------------------------------------------------------------------------
# Where a benchmark ran
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class Machine:
    """The device, threads, load and CPU flags a benchmark ran with: every speed report starts with them, since
    seconds mean little without them (figures compare as ratios within one run)."""
    device: str
    device_name: str
    threads: int
    load_average: Optional[float]   # 1-minute load average when the run ended (None off Unix)
    cpu_flags: Dict[str, bool]      # bf16-relevant x86 flags (empty on a GPU)

    @classmethod
    def here(cls, device) -> "Machine":
        dev = resolve_device(device)
        return cls(device=str(dev), device_name=device_name(dev), threads=torch.get_num_threads(),
                   load_average=os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
                   cpu_flags=cpu_features() if dev.type == "cpu" else {})

    def describe(self) -> str:
        return (f"device {self.device} ({self.device_name}), {self.threads} threads"
                + (f", load average {self.load_average:.1f} at the end" if self.load_average is not None else "")
                + (f", CPU flags: {', '.join(f'{k}={int(v)}' for k, v in self.cpu_flags.items())}"
                   if self.cpu_flags else ""))


# ---------------------------------------------------------------------------------------------------------------
# Time
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class Timing:
    wall_s: float                  # median wall-clock seconds per call
    cpu_s: float                   # median CPU seconds of this process per call (all threads): robust to other load
    peak_mem_bytes: Optional[int]  # peak memory during the first timed call (None: not measured)


def interleaved_timings(fns: Dict[str, Callable[[], object]], device: torch.device, warmup: int = 1,
                        repeat: int = 2, with_memory: bool = True) -> Dict[str, Timing]:
    """Time several calls in alternation (A B A B ...), so a change of machine load hits all of them alike.

    Wall and process-CPU time are both kept: on a shared machine the CPU time of a compute-bound call moves far
    less than its wall time, so ratios of CPU times are the fairer comparison there."""
    if repeat < 1 or warmup < 0:
        raise ValueError(f"need repeat >= 1 and warmup >= 0, got repeat={repeat}, warmup={warmup}")
    device = resolve_device(device)
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    walls: Dict[str, list] = {k: [] for k in fns}
    cpus: Dict[str, list] = {k: [] for k in fns}
    peaks: Dict[str, Optional[int]] = {k: None for k in fns}

    def one(name: str) -> None:
        synchronize(device)
        w0, c0 = time.perf_counter(), time.process_time()
        fns[name]()
        synchronize(device)
        walls[name].append(time.perf_counter() - w0)
        cpus[name].append(time.process_time() - c0)

    for r in range(repeat):
        for name in fns:
            if r == 0 and with_memory:
                peaks[name] = measure_peak_memory(lambda: one(name), device)
            else:
                one(name)
    med = lambda v: sorted(v)[len(v) // 2]  # noqa: E731
    return {k: Timing(med(walls[k]), med(cpus[k]), peaks[k]) for k in fns}


def time_fn(fn: Callable[[], object], *, warmup: int = 1, repeat: int = 3, device: str | torch.device = 'cpu') -> float:
    """Median wall-clock seconds of ``fn()`` over ``repeat`` runs after ``warmup`` untimed runs."""
    return interleaved_timings({'fn': fn}, resolve_device(device), warmup, repeat, with_memory=False)['fn'].wall_s


@dataclass
class Roofline:
    wall_gflops: float   # per wall second: the figure to read wall times against
    cpu_gflops: float    # per CPU second of this process: the figure to read CPU times against (CPU only)


def matmul_roofline(device: str | torch.device = 'cpu', dtype: torch.dtype = torch.float32, n: int = 2048,
                    repeat: int = 3) -> Roofline:
    """Achieved GFLOP/s of an (n x n) @ (n x n) matmul (2 n^3 FLOPs) on ``device`` in ``dtype``: the best of
    ``repeat`` timed runs, since a roofline is what the hardware can reach (a median would fold in interference),
    and the better of the two kernels the package runs: ``torch.mm`` and ``varformer.ops.linear`` (on a CPU in
    float32 inference oneDNN's matmul, which can be faster than PyTorch's default kernel)."""
    dev = resolve_device(device)
    gen = torch.Generator(device='cpu').manual_seed(0)
    a, b = (torch.randn(n, n, generator=gen).to(device=dev, dtype=dtype) for _ in range(2))
    kernels = {'mm': lambda: torch.mm(a, b), 'linear': lambda: ops.linear(a, b)}
    best_wall, best_cpu = float('inf'), float('inf')
    with torch.no_grad():
        for fn in kernels.values():
            fn()  # warm-up: kernel choice, allocator
        for _ in range(max(repeat, 1)):
            for t in interleaved_timings(kernels, dev, 0, 1, with_memory=False).values():
                best_wall, best_cpu = min(best_wall, t.wall_s), min(best_cpu, t.cpu_s)
    flops = 2 * n ** 3
    return Roofline(flops / best_wall / 1e9, flops / max(best_cpu, 1e-9) / 1e9)


def matmul_gflops(device: str | torch.device = 'cpu', dtype: torch.dtype = torch.float32, n: int = 2048,
                  repeat: int = 5) -> float:
    """The wall-clock figure of ``matmul_roofline``."""
    return matmul_roofline(device, dtype, n, repeat).wall_gflops


def random_images(batch: int, size: int = 256, device: str | torch.device = 'cpu', seed: int = 0,
                  low: float = 0.0) -> torch.Tensor:
    """(batch, 3, size, size) uniform in [low, 1] (``low=-1``: the VQVAE's range), from a seeded generator."""
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(batch, 3, size, size, generator=g) * (1 - low) + low).to(device)


def range_seconds(fn: Callable[[], object], names: Sequence[str], device: torch.device) -> Dict[str, float]:
    """Seconds spent in each ``record_function`` range of ``names`` during one call of ``fn``, and the call's own
    seconds under ``'total'``, from one profiled call (device time on CUDA, CPU time elsewhere). The profiler adds
    a little overhead per op, so read the results as shares of ``total``."""
    device = resolve_device(device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == 'cuda' else [])
    synchronize(device)
    t0 = time.perf_counter()
    with profile(activities=activities, record_shapes=False, with_stack=False) as prof:
        fn()
        synchronize(device)
    total = time.perf_counter() - t0
    out = {name: 0.0 for name in names}
    for ev in prof.key_averages():
        if ev.key in out:
            device_us = getattr(ev, 'device_time_total', None) or getattr(ev, 'cuda_time_total', 0)
            out[ev.key] = (device_us if device.type == 'cuda' and device_us else ev.cpu_time_total) / 1e6
    out['total'] = total
    return out


# ---------------------------------------------------------------------------------------------------------------
# FLOPs
# ---------------------------------------------------------------------------------------------------------------
aten = torch.ops.aten
# oneDNN's fused linear (varformer.ops), where this build has it
_ONEDNN_LINEAR = getattr(getattr(torch.ops.mkldnn, "_linear_pointwise", None), "default", None)


def _numel(shape) -> int:
    return math.prod(shape)


# the attention ops SDPA dispatches to (those a torch version lacks are left out: the CPU flash kernel is 2.3+)
_ATTENTION = tuple(getattr(aten, name) for name in (
    "_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_flash_attention",
    "_scaled_dot_product_efficient_attention", "_scaled_dot_product_cudnn_attention",
    "scaled_dot_product_attention") if hasattr(aten, name))


def op_flops(func, args, out) -> int:
    """FLOPs of one op, this package's own count (only the matrix products, convolutions and attention; elementwise
    ops count 0). Under ``inference_mode`` composite ops (``linear``, ``conv2d``, ``scaled_dot_product_attention``,
    ``matmul``) reach the mode undecomposed, so they are counted too."""
    packet = func.overloadpacket
    if packet in (aten.mm, aten.addmm, aten.addmm_):
        a, b = (args[0], args[1]) if packet is aten.mm else (args[1], args[2])
        return 2 * a.shape[0] * a.shape[1] * b.shape[1]
    if packet in (aten.bmm, aten.baddbmm):
        a, b = (args[0], args[1]) if packet is aten.bmm else (args[1], args[2])
        return 2 * a.shape[0] * a.shape[1] * a.shape[2] * b.shape[2]
    if packet is aten.matmul:
        return 2 * out.numel() * args[0].shape[-1]
    if packet is aten.linear or func is _ONEDNN_LINEAR:
        return 2 * args[0].numel() * args[1].shape[0]
    if packet in (aten.convolution, aten.conv1d, aten.conv2d, aten.conv3d):
        w = args[1]
        transposed = packet is aten.convolution and len(args) > 6 and bool(args[6])
        if transposed:  # weight (C_in, C_out / groups, k...): every input element meets C_out / groups kernels
            return 2 * args[0].numel() * w.shape[1] * _numel(w.shape[2:])
        return 2 * out.numel() * w.shape[1] * _numel(w.shape[2:])
    if packet in _ATTENTION:
        q, k, v = args[0], args[1], args[2]
        *batch, L, E = q.shape
        return 2 * _numel(batch) * L * k.shape[-2] * (E + v.shape[-1])
    return 0


def op_bytes(args, kwargs, out) -> int:
    """Bytes of every tensor an op reads or writes (each time it is used)."""
    total = 0
    for t in tree_flatten((args, kwargs, out))[0]:
        if isinstance(t, torch.Tensor):
            total += t.numel() * t.element_size()
    return total


class _FlopModuleMode(TorchDispatchMode):
    """Adds each op's FLOPs to every module open on the call stack (``per_module``) and to the innermost one
    (``innermost``; the outermost module's name when no module runs); module forward hooks keep the stack."""

    def __init__(self):
        super().__init__()
        self.total = 0
        self.per_module: Dict[str, int] = {}
        self.innermost: Dict[str, int] = {}
        self.stack: list = []
        self._names: Dict[int, str] = {}

    def pre_hook(self, module, args):
        if not self.stack and id(module) not in self._names:  # an outermost module: name its tree from it
            root = type(module).__name__
            self._names.update({id(m): f"{root}.{n}" if n else root for n, m in module.named_modules()})
        self.stack.append(self._names.get(id(module), type(module).__name__))

    def post_hook(self, module, args, out):
        if self.stack:
            self.stack.pop()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        n = op_flops(func, args, out)
        if n:
            self.total += n
            for name in dict.fromkeys(self.stack):
                self.per_module[name] = self.per_module.get(name, 0) + n
            inner = self.stack[-1] if self.stack else ""
            self.innermost[inner] = self.innermost.get(inner, 0) + n
        return out


def count_flops(fn: Callable, *args, **kwargs) -> int:
    """Total FLOPs of ``fn(*args, **kwargs)`` (runs fn once): matrix products, convolutions and attention (its two
    matmuls, masked entries included), a multiply-add counting 2; elementwise ops count 0. Counted op by op by this
    module's own counter (``op_flops``, not ``torch.utils.flop_counter``), so the composite ops that reach a dispatch
    mode undecomposed under ``inference_mode`` are counted on every torch version."""
    return _counted(fn, *args, **kwargs).total


def _counted(fn: Callable, *args, **kwargs) -> "_FlopModuleMode":
    mode = _FlopModuleMode()
    pre = torch.nn.modules.module.register_module_forward_pre_hook(mode.pre_hook)
    post = torch.nn.modules.module.register_module_forward_hook(mode.post_hook)
    try:
        with mode:
            fn(*args, **kwargs)
    finally:
        pre.remove()
        post.remove()
    return mode


def count_flops_by_module(fn: Callable, *args, **kwargs) -> tuple[int, Dict[str, int]]:
    """``count_flops`` plus the FLOPs inside each module called as a module during ``fn``, keyed by its dotted
    path from the outermost module (e.g. ``'MyNet.vae.decoder'``); ``'Global'`` is the total."""
    mode = _counted(fn, *args, **kwargs)
    return mode.total, dict(mode.per_module, Global=mode.total)


def _in_group(path: str, prefixes: Sequence[str]) -> bool:
    return any(path == p or path.startswith(p + ".") for p in prefixes)


def flops_by_group(fn: Callable, groups: Sequence[Tuple[str, Sequence[str]]], rest: str, *args,
                   **kwargs) -> Tuple[int, Dict[str, int]]:
    """(total FLOPs, {label: FLOPs}) of ``fn(*args)``: each op counts for the innermost module running it, and that
    module for the first group with a path (relative to the outermost module, e.g. ``'vae.encoder'``) it lies
    under; ops outside every group's modules go to ``rest``. The groups add up to the total."""
    mode = _counted(fn, *args, **kwargs)
    out = {label: 0 for label, _ in groups}
    out[rest] = 0
    for path, n in mode.innermost.items():
        relative = path.split(".", 1)[1] if "." in path else ""
        label = next((label for label, prefixes in groups if _in_group(relative, prefixes)), rest)
        out[label] += n
    return mode.total, out


def params_by_group(model: torch.nn.Module, groups: Sequence[Tuple[str, Sequence[str]]],
                    rest: str) -> Dict[str, int]:
    """Parameters of ``model`` per group of module paths (as ``flops_by_group``; shared tensors counted once)."""
    out = {label: 0 for label, _ in groups}
    out[rest] = 0
    for name, p in model.named_parameters():
        label = next((label for label, prefixes in groups if _in_group(name, prefixes)), rest)
        out[label] += p.numel()
    return out


# ---------------------------------------------------------------------------------------------------------------
# Memory
# ---------------------------------------------------------------------------------------------------------------
def _status_kib(field: str) -> int | None:
    try:
        with open('/proc/self/status') as fh:
            m = re.search(rf'^{field}:\s+(\d+)\s+kB', fh.read(), re.MULTILINE)
        return int(m.group(1)) if m else None
    except OSError:
        return None


def current_memory(device: str | torch.device = 'cpu') -> int:
    """Memory in use now: CUDA allocated tensor bytes, or the process's resident set size on CPU (0 if unknown)."""
    dev = resolve_device(device)
    if dev.type == 'cuda':
        return int(torch.cuda.memory_allocated(dev))
    kib = _status_kib('VmRSS')
    return 0 if kib is None else kib * 1024


def _reset_rss_peak() -> bool:
    try:
        with open('/proc/self/clear_refs', 'w') as fh:
            fh.write('5')          # "5" resets the peak RSS (VmHWM) of this process (Linux >= 4.0)
        return True
    except OSError:
        return False


def measure_peak_memory(fn: Callable[[], object], device: str | torch.device = 'cpu') -> int:
    """Peak memory in bytes during `fn()` (see the module docstring for what is measured on each device)."""
    dev = resolve_device(device)
    if dev.type == 'cuda':
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        fn()
        torch.cuda.synchronize(dev)
        return int(torch.cuda.max_memory_allocated(dev))
    if _reset_rss_peak() and _status_kib('VmHWM') is not None:
        fn()
        return _status_kib('VmHWM') * 1024
    return _sampled_peak_rss(fn)


def _sampled_peak_rss(fn: Callable[[], object]) -> int:
    peak = [current_memory('cpu')]
    done = threading.Event()

    def poll():
        while not done.is_set():
            peak[0] = max(peak[0], current_memory('cpu'))
            time.sleep(0.001)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    try:
        fn()
    finally:
        done.set()
        thread.join()
    return max(peak[0], current_memory('cpu'))


class _LiveStorageTracker(TorchDispatchMode):
    """Counts the storage of every tensor an op creates (not views or in-place results, which alias an input)
    until the last tensor on it is freed. Tensors, not storages, are watched: before torch 2.2 a storage's Python
    object does not live and die with the storage (a finalizer on it never runs, and crashes the interpreter at
    exit)."""

    def __init__(self):
        super().__init__()
        self.current = self.peak = 0
        self._live: Dict[int, list] = {}   # storage data_ptr -> [bytes, tensors alive on it]

    def _released(self, ptr: int) -> None:
        entry = self._live.get(ptr)
        if entry is not None:
            entry[1] -= 1
            if entry[1] == 0:
                del self._live[ptr]
                self.current -= entry[0]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {t.untyped_storage().data_ptr() for t in tree_flatten((args, kwargs))[0]
                  if isinstance(t, torch.Tensor)}
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor):
                continue
            storage = t.untyped_storage()
            ptr, nbytes = storage.data_ptr(), storage.nbytes()
            if ptr in self._live:
                self._live[ptr][1] += 1      # a view (or in-place result) of a tracked storage keeps it alive
            elif nbytes == 0 or ptr in inputs:
                continue
            else:
                self._live[ptr] = [nbytes, 1]
                self.current += nbytes
                self.peak = max(self.peak, self.current)
            weakref.finalize(t, self._released, ptr)
        return out


def peak_tensor_bytes(fn: Callable[[], object]) -> int:
    """Peak bytes of tensor storage allocated during `fn()` and alive at the same time (see the module docstring);
    what `fn` returns is dropped before this returns."""
    tracker = _LiveStorageTracker()
    with tracker:
        fn()
    return tracker.peak


def tensor_bytes(modules: Iterable[torch.nn.Module]) -> int:
    """Bytes of the distinct parameter and buffer storages of `modules` (shared tensors counted once)."""
    seen: Dict[int, int] = {}
    for m in modules:
        for t in list(m.parameters()) + list(m.buffers()):
            st = t.untyped_storage()
            seen[st.data_ptr()] = st.nbytes()
    return sum(seen.values())
