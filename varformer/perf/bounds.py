"""How close each part of a model runs to what the machine allows: FLOPs and bytes per part, counted op by op, and
the bound they set against a matmul and a memory copy measured in the same run.

    costs = part_costs(lambda: restorer(x), part_names)     # {part: PartCost(flops, bytes)} + "(rest)"
    bw = copy_bandwidth(device)                              # bytes/s of a large tensor copy (read + write)
    costs[name].bound_s(rates, bw)                           # max(compute time, memory time)

``rates`` maps a compute dtype to the matmul rate measured in it (``{torch.float32: ..., torch.bfloat16: ...}``):
each op's FLOPs count at the rate of the dtype it computes in, so a part a bf16 run keeps in float32 (e.g. a
tokenizer) is held to the float32 rate.

Parts are the ``torch.profiler.record_function`` ranges a model marks itself with (its method's
``BenchmarkEntry.parts``); a dispatch mode sees their enter/exit ops, so nothing of the model is replaced. FLOPs:
the matrix products, convolutions and attention, counted by ``perf.measure``'s own counter (``op_flops``; a
multiply-add counts 2). Bytes: every tensor each op reads or writes, counted at every op (weights once per use): the
traffic if nothing stayed in cache, an upper estimate of what an op must move, so the memory bound is conservative
for the fused, cache-friendly ops and exact for the streaming ones (a scale loop at batch 1 reads the whole
transformer at every scale for a handful of tokens).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Sequence

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from varformer.perf.measure import interleaved_timings, op_bytes, op_flops

REST = "(rest)"


@dataclass
class PartCost:
    flops_by_dtype: Dict[torch.dtype, int] = field(default_factory=dict)
    bytes: int = 0

    @property
    def flops(self) -> int:
        return sum(self.flops_by_dtype.values())

    def compute_s(self, flops_per_s: Dict[torch.dtype, float]) -> float:
        """Seconds for this part's FLOPs, each dtype's at its matmul rate (a dtype without a measured rate, e.g.
        float16 on a CPU, at the slowest rate given)."""
        slowest = min(flops_per_s.values())
        return sum(f / flops_per_s.get(dt, slowest) for dt, f in self.flops_by_dtype.items())

    def memory_s(self, bytes_per_s: float) -> float:
        return self.bytes / bytes_per_s

    def bound_s(self, flops_per_s: Dict[torch.dtype, float], bytes_per_s: float) -> float:
        """The time this part needs at least: its FLOPs at the matmul rates or its bytes at the copy rate."""
        return max(self.compute_s(flops_per_s), self.memory_s(bytes_per_s))


class _PartCostMode(TorchDispatchMode):
    """Attributes each op's FLOPs and bytes to the innermost open part range (``REST`` outside them)."""

    _ENTER = "profiler._record_function_enter"
    _EXIT = "profiler._record_function_exit"

    def __init__(self, names: Sequence[str]):
        super().__init__()
        self.names = set(names)
        self.stack: List[str] = []
        self.costs: Dict[str, PartCost] = {n: PartCost() for n in list(names) + [REST]}
        self._handles: List[object] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = str(func)
        if name.startswith(self._ENTER):
            label = args[0] if args and isinstance(args[0], str) else ""
            self.stack.append(label)
            return func(*args, **kwargs)
        if name.startswith(self._EXIT):
            if self.stack:
                self.stack.pop()
            return func(*args, **kwargs)
        out = func(*args, **kwargs)
        part = next((p for p in reversed(self.stack) if p in self.names), REST)
        cost = self.costs[part]
        flops = op_flops(func, args, out)
        if flops:
            dtype = next((a.dtype for a in args if isinstance(a, torch.Tensor) and a.is_floating_point()),
                         torch.float32)
            cost.flops_by_dtype[dtype] = cost.flops_by_dtype.get(dtype, 0) + flops
        cost.bytes += op_bytes(args, kwargs, out)
        return out


def part_costs(fn: Callable[[], object], names: Sequence[str]) -> Dict[str, PartCost]:
    """FLOPs and bytes of each named range during one call of ``fn`` (under ``no_grad``, so composite ops such as
    ``linear`` reach the counted matrix products); ``REST`` holds what runs outside them."""
    mode = _PartCostMode(names)
    with torch.inference_mode(False), torch.no_grad(), mode:
        fn()
    return mode.costs


def copy_bandwidth(device: torch.device, mib: int = 256, repeat: int = 3) -> float:
    """Bytes per second of a large tensor copy (read + write), best of ``repeat``: the memory roofline."""
    n = mib * 2 ** 20 // 4
    src = torch.ones(n, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)  # touch the pages first: the measurement is the copy, not the page faults
    # the best of single timed rounds, as for the matmul roofline: a bound is what the hardware can reach
    best = min(interleaved_timings({"copy": lambda: dst.copy_(src)}, device, 0, 1, with_memory=False)["copy"].wall_s
               for _ in range(max(repeat, 1)))
    return 2 * n * 4 / max(best, 1e-12)
