"""Process-group setup for ``torchrun`` (or a single process), per-rank seeding and rank-0 helpers.

``torchrun --nproc_per_node=N -m varformer train ...`` sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; without
them the run is a single process. NCCL is used when the device is CUDA, gloo on CPU.
"""
from __future__ import annotations

import inspect
import os
import random
from dataclasses import dataclass
from typing import Any, List

import numpy as np
import torch
import torch.distributed as dist

from varformer.runtime import resolve_device


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def setup_distributed(device: str = "auto") -> DistInfo:
    """Join the process group torchrun describes in the environment (no-op for a single process)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if world_size > 1 and not dist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        # device_id (an eager NCCL communicator on this GPU) exists from torch 2.3 on
        eager = ({"device_id": dev} if dev.type == "cuda"
                 and "device_id" in inspect.signature(dist.init_process_group).parameters else {})
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo", rank=rank, world_size=world_size,
                                **eager)
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=dev)


def cleanup_distributed() -> None:
    """Destroy the process group, letting go of its backends last and from Python.

    Why: older torch destroys a backend reached through its group with the GIL held, and a gloo backend's
    destructor joins its worker threads, one of which may be waiting for the GIL to free a finished collective's
    tensors: the process hangs at the end of a run (about one run in four of the two-process test on torch 2.1;
    pytorch/pytorch#56297, fixed upstream in 2025 by pytorch/pytorch#154976). A backend's own Python object
    releases the GIL before destroying it, so holding that object across the destroy and dropping it afterwards
    makes it the last reference. Anything else holding the group must be gone first: a DDP wrapper's reducer
    does (``Trainer.close``).
    """
    if not (dist.is_available() and dist.is_initialized()):
        return
    group = dist.group.WORLD
    backends = []
    for device_type in ("cpu", "cuda"):
        try:
            backends.append(group._get_backend(torch.device(device_type)))
        except (AttributeError, RuntimeError, ValueError):
            pass  # no backend for that device type (or a torch without the accessor)
    del group  # the group itself goes in the destroy, with the GIL held but no longer the backends' last holder
    dist.destroy_process_group()
    del backends  # the last references: destroyed with the GIL released


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()


def seed_everything(seed: int, rank: int = 0) -> None:
    """Seed Python, NumPy and torch (CPU and all CUDA devices) with ``seed + rank`` (official: 114514 + rank)."""
    s = int(seed) + int(rank)
    random.seed(s)
    np.random.seed(s % (2 ** 32))
    torch.manual_seed(s)


def rng_state() -> dict:
    """Every random generator's state as tensors and plain numbers, so a checkpoint holding it loads with
    ``torch.load(weights_only=True)`` (NumPy's state is an array, Python's a tuple of 625 integers)."""
    version, mt, gauss = random.getstate()
    key, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": {"version": int(version), "state": torch.tensor(mt, dtype=torch.int64), "gauss": gauss},
             "numpy": {"key": str(key), "state": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "gauss": float(cached)},
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    py, nps = state["python"], state["numpy"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
    np.random.set_state((nps["key"], nps["state"].numpy().astype(np.uint32), nps["pos"], nps["has_gauss"],
                         nps["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def broadcast_object(info: DistInfo, obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (``obj`` itself without a process group)."""
    if not info.distributed:
        return obj
    box = [obj if info.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(info: DistInfo, obj: Any) -> List[Any]:
    """Every rank's ``obj`` as a list indexed by rank (a list of one without a process group)."""
    if not info.distributed:
        return [obj]
    out: List[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def any_rank(info: DistInfo, flag: bool) -> bool:
    """True on every rank when ``flag`` is true on at least one rank."""
    if not info.distributed:
        return bool(flag)
    t = torch.tensor([1.0 if flag else 0.0], device=info.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)
