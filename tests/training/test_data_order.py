"""The endless sharded sampler and the loader the trainer builds on it."""
import numpy as np
import torch
from torch.utils.data import Dataset

from varformer.training.sampling import InfiniteShardedSampler, build_loader, shuffles_ids


class IdSeeded(Dataset):
    """Each sample depends on its id alone (as the training datasets do); ``task_order`` as theirs."""

    def __init__(self, n: int = 10, task_order: str = "random"):
        self.n, self.task_order = n, task_order

    def __len__(self):
        return self.n

    def __getitem__(self, sample_id):
        rng = np.random.default_rng([7, int(sample_id)])
        return {"x": torch.from_numpy(rng.random(4).astype(np.float32)), "task": int(sample_id) % 3}


def test_sampler_shards_disjointly_and_resumes():
    world, n = 3, 10
    streams = []
    for rank in range(world):
        it = iter(InfiniteShardedSampler(n, rank, world, seed=5))
        streams.append([next(it) for _ in range(8)])
    flat = [i for s in streams for i in s]
    assert len(flat) == len(set(flat))  # no sample id on two ranks
    assert set(i for s in streams for i in s if i < n) == set(range(n))  # epoch 0 covered exactly
    it = iter(InfiniteShardedSampler(n, 1, world, seed=5, start=5))
    assert [next(it) for _ in range(3)] == streams[1][5:8]  # resume reproduces the stream


def test_loader_independent_of_workers_and_resumable():
    ds = IdSeeded()
    a = iter(build_loader(ds, 4, num_workers=0, seed=1))
    b = next(iter(build_loader(ds, 4, num_workers=2, seed=1)))
    first = next(a)
    assert torch.equal(first["x"], b["x"])
    resumed = next(iter(build_loader(ds, 4, seed=1, start_sample=4)))
    assert torch.equal(next(a)["x"], resumed["x"])  # starting at sample 4 = the second batch


def test_cycle_order_is_not_shuffled():
    """Consecutive ids must stay together when they mean something (the demo's tasks in turn)."""
    assert shuffles_ids(IdSeeded()) and not shuffles_ids(IdSeeded(task_order="cycle"))
    batch = next(iter(build_loader(IdSeeded(task_order="cycle"), batch_size=3, seed=0)))
    assert sorted(batch["task"].tolist()) == [0, 1, 2]
