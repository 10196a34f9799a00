"""Small measurement helpers shared by the benchmark commands: FLOP counting, timing, a matmul roofline and peak
memory.

- `count_flops(fn, *args, **kwargs)`: FLOPs of one call as counted by `torch.utils.flop_counter` (matmuls,
  convolutions, attention; a multiply-add counts 2; elementwise ops are not counted).
- `time_fn(fn, warmup=1, repeat=3, device='cpu')`: median wall time in seconds (CUDA synchronised around calls).
- `matmul_gflops(device, dtype, n)`: achieved GFLOP/s of an n x n matmul (best of a few runs), the practical
  compute roofline to read a model's achieved GFLOP/s against.
- `measure_peak_memory(fn, device)`: peak memory in bytes while `fn` runs. CUDA: the caching allocator's peak of
  allocated tensor memory (`torch.cuda.max_memory_allocated` after a reset). CPU: the peak resident set size of
  the whole process (Linux `VmHWM`, reset through `/proc/self/clear_refs` before the call), so it includes the
  interpreter, libraries and the weights already loaded; subtract `current_memory('cpu')` taken before the call
  for the extra memory of `fn`. Where the peak cannot be reset, the RSS is sampled every millisecond by a thread
  instead (short spikes may be missed).
- `peak_tensor_bytes(fn)`: on any device, the peak bytes of tensor storage allocated while `fn` runs and still
  alive, tracked op by op (a `TorchDispatchMode`; slow, for measurement runs only). Added to the bytes of the
  tensors that exist before (`tensor_bytes(model)`), it is what CUDA's `max_memory_allocated` reports, so a CPU
  run gives the figure a GPU would, without the interpreter and libraries the process RSS includes.
"""
from __future__ import annotations

import re
import statistics
import threading
import time
import weakref
from typing import Callable, Dict, Iterable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count


def _device(device) -> torch.device:
    return device if isinstance(device, torch.device) else torch.device(device)


def _sync(device) -> None:
    if _device(device).type == 'cuda':
        torch.cuda.synchronize(_device(device))


def _cpu_flash_attention_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


# torch's counter knows the CUDA attention kernels but not the CPU flash kernel SDPA dispatches to on CPU
_EXTRA_FORMULAS = {}
if hasattr(torch.ops.aten, '_scaled_dot_product_flash_attention_for_cpu'):
    _EXTRA_FORMULAS[torch.ops.aten._scaled_dot_product_flash_attention_for_cpu] = _cpu_flash_attention_flops


def count_flops(fn: Callable, *args, **kwargs) -> int:
    """Total FLOPs of `fn(*args, **kwargs)` counted by torch's FlopCounterMode (runs fn once); attention counts
    its two matmuls (masked entries included) on every device."""
    counter = FlopCounterMode(display=False, custom_mapping=dict(_EXTRA_FORMULAS))
    with counter:
        fn(*args, **kwargs)
    return int(counter.get_total_flops())


def time_fn(fn: Callable[[], object], *, warmup: int = 1, repeat: int = 3, device: str | torch.device = 'cpu') -> float:
    """Median wall-clock seconds of `fn()` over `repeat` runs after `warmup` untimed runs."""
    if repeat < 1:
        raise ValueError(f"repeat must be >= 1, got {repeat}")
    for _ in range(max(warmup, 0)):
        fn()
    _sync(device)
    times = []
    for _ in range(repeat):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_gflops(device: str | torch.device = 'cpu', dtype: torch.dtype = torch.float32, n: int = 2048,
                  repeat: int = 5) -> float:
    """Achieved GFLOP/s of an (n x n) @ (n x n) matmul (2 n^3 FLOPs) on `device` in `dtype`: the best of `repeat`
    timed runs, since a roofline is what the hardware can reach (a median would fold in interference)."""
    gen = torch.Generator(device='cpu').manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(device=device, dtype=dtype)
    b = torch.randn(n, n, generator=gen).to(device=device, dtype=dtype)
    best = min(time_fn(lambda: torch.mm(a, b), warmup=1 if i == 0 else 0, repeat=1, device=device)
               for i in range(max(repeat, 1)))
    return 2 * n ** 3 / best / 1e9


def _status_kib(field: str) -> int | None:
    try:
        with open('/proc/self/status') as fh:
            m = re.search(rf'^{field}:\s+(\d+)\s+kB', fh.read(), re.MULTILINE)
        return int(m.group(1)) if m else None
    except OSError:
        return None


def current_memory(device: str | torch.device = 'cpu') -> int:
    """Memory in use now: CUDA allocated tensor bytes, or the process's resident set size on CPU (0 if unknown)."""
    dev = _device(device)
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
    dev = _device(device)
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
    until the storage is freed."""

    def __init__(self):
        super().__init__()
        self.current = self.peak = 0
        self._live: Dict[int, int] = {}   # storage data_ptr -> bytes

    def _freed(self, ptr: int, nbytes: int) -> None:
        if self._live.pop(ptr, None) is not None:
            self.current -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {t.untyped_storage().data_ptr() for t in tree_flatten((args, kwargs))[0]
                  if isinstance(t, torch.Tensor)}
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor):
                continue
            storage = t.untyped_storage()
            ptr, nbytes = storage.data_ptr(), storage.nbytes()
            if nbytes == 0 or ptr in inputs or ptr in self._live:
                continue
            self._live[ptr] = nbytes
            self.current += nbytes
            self.peak = max(self.peak, self.current)
            weakref.finalize(storage, self._freed, ptr, nbytes)
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
