"""Which samples each process trains on, in which order, resumable at any step.

``InfiniteShardedSampler`` yields sample ids without end: epoch ``e`` is a permutation (seeded by (seed, e)) of
``e*n .. e*n+n-1`` and rank ``r`` of ``world_size`` takes positions ``r, r+W, r+2W, ...`` of it, so ranks never share
a sample. ``start`` skips that many of this rank's ids: a resumed run sees exactly the ids the uninterrupted run
would have seen. The training datasets (``varformer.data.train_sets``) derive every random choice of a sample from
``(seed, id)``, so the batches depend neither on the number of DataLoader workers nor on which worker loads what.
Such datasets say so with ``unbounded_ids = True``; any other dataset is indexed with ``id % len(dataset)``.
"""
from __future__ import annotations

import math
import random
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from varformer.errors import DataError


class InfiniteShardedSampler(Sampler[int]):
    def __init__(self, num_samples: int, rank: int = 0, world_size: int = 1, seed: int = 0, shuffle: bool = True,
                 start: int = 0):
        if num_samples <= 0:
            raise DataError("the sampler needs a dataset with at least one sample")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world size {world_size}")
        self.n, self.rank, self.world, self.seed, self.shuffle, self.start = (
            num_samples, rank, world_size, seed, shuffle, start)

    def _epoch_ids(self, epoch: int) -> np.ndarray:
        ids = np.arange(self.n, dtype=np.int64)
        if self.shuffle:
            ids = np.random.default_rng([int(self.seed) & 0xFFFFFFFF, epoch]).permutation(ids)
        return ids + epoch * self.n

    def __iter__(self) -> Iterator[int]:
        per_epoch = math.ceil((self.n - self.rank) / self.world)
        epoch, skip = divmod(self.start, per_epoch) if per_epoch else (0, 0)
        while True:
            for sid in self._epoch_ids(epoch)[self.rank::self.world][skip:]:
                yield int(sid)
            skip = 0
            epoch += 1


def shuffles_ids(dataset: Dataset) -> bool:
    """Whether the sampler should permute sample ids: yes (the order does not change what a sample is: each id
    seeds its own task, image and crop), except for datasets that give consecutive ids a meaning (the demo's
    ``task_order='cycle'``: consecutive ids, hence consecutive steps and the ranks of one step, go round the
    tasks)."""
    return getattr(dataset, "task_order", "random") != "cycle"


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: distinct, reproducible global RNG states per (base seed, worker)."""
    s = torch.initial_seed() % 2**32
    np.random.seed(s)
    random.seed(s)


class _ModuloIds(Dataset):
    """A dataset indexed ``0..n-1`` seen through the sampler's unbounded ids."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, sample_id: int):
        return self.dataset[sample_id % len(self.dataset)]


def build_loader(dataset: Dataset, batch_size: int, *, num_workers: int = 0, pin_memory: bool = False,
                 persistent_workers: bool = False, seed: int = 0, rank: int = 0, world_size: int = 1,
                 start_sample: int = 0, collate_fn=None) -> DataLoader:
    """An endless DataLoader for one rank (``start_sample``: this rank's samples already consumed, for resume).
    The workers' base seed comes from a generator seeded by (seed, rank, start_sample), not from the global RNG:
    creating a loader on resume must not shift the global random stream."""
    sampler = InfiniteShardedSampler(len(dataset), rank, world_size, seed, shuffles_ids(dataset), start_sample)
    if not getattr(dataset, "unbounded_ids", False):
        dataset = _ModuloIds(dataset)
    gen = torch.Generator()
    gen.manual_seed((int(seed) * 1_000_003 + rank * 1_009 + int(start_sample)) % (2 ** 63))
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                      pin_memory=pin_memory, persistent_workers=persistent_workers and num_workers > 0,
                      worker_init_fn=seed_worker, generator=gen, drop_last=True, collate_fn=collate_fn,
                      prefetch_factor=4 if num_workers > 0 else None)
