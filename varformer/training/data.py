"""Resumable data order: a sampler wrapper that can start an epoch part-way, so a resumed run sees exactly the
batches the uninterrupted run would have seen, and a default per-rank shuffling sampler.

Bit-exact resume also needs each sample's randomness (crops) to depend only on the sample index and epoch, or on
the main process' RNG with ``num_workers=0``; the RNG states themselves are saved in the checkpoint.
"""
from __future__ import annotations

import math
from typing import Iterator, Optional, Sized

import torch
from torch.utils.data import Sampler


class ShardedShuffleSampler(Sampler[int]):
    """A fresh permutation of ``range(n)`` per epoch (seeded by ``seed`` and the epoch, identical on every rank),
    padded to a multiple of ``world_size`` and dealt out round-robin: rank ``r`` gets positions ``r, r+W, ...``."""

    def __init__(self, n: int, rank: int = 0, world_size: int = 1, seed: int = 0, shuffle: bool = True):
        if n <= 0:
            raise ValueError("ShardedShuffleSampler needs a non-empty dataset")
        self.n, self.rank, self.world_size, self.seed, self.shuffle = n, rank, world_size, seed, shuffle
        self.epoch = 0
        self.per_rank = math.ceil(n / world_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.per_rank

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        total = self.per_rank * self.world_size
        order = (order * math.ceil(total / self.n))[:total]
        return iter(order[self.rank:total:self.world_size])


class ResumableSampler(Sampler[int]):
    """Wraps any sampler (calling its ``set_epoch`` when it has one) and skips the first ``skip`` indices of the
    next epoch; the skip applies once, so persistent DataLoader workers keep working across epochs."""

    def __init__(self, sampler: Sampler, skip: int = 0):
        self.sampler = sampler
        self.skip = int(skip)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.sampler) if isinstance(self.sampler, Sized) else 0

    def __iter__(self) -> Iterator[int]:
        skip, self.skip = self.skip, 0
        for i, idx in enumerate(self.sampler):
            if i >= skip:
                yield idx


def batches_per_epoch(sampler: Sampler, batch_size: int) -> Optional[int]:
    """Full batches per epoch (``drop_last``), or None for a sampler without a length."""
    try:
        return len(sampler) // batch_size
    except TypeError:
        return None
