"""How many images one optimiser step sees, and how each process gets there.

The recipes state the *global* batch (``train.global_batch_size``; each method's ``StageSpec`` records its
release's, e.g. VarFormer's 8 for stage 1, 4 per GPU x 2 GPUs, and 64 for stage 2, 16 x 4). Each process takes ``global / world_size`` images per step; when that is more than the
micro-batch that fits (``data.batch_size``) it runs several micro-batches and accumulates their gradients before
the update (``accumulation`` micro-batches of ``micro_batch`` images: an exact divisor, so every step sees exactly
the per-process batch). ``global_batch_size = 0`` keeps the old meaning: ``data.batch_size`` per process, no
accumulation.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List

from varformer.errors import ConfigError
from varformer.methods.api import StageSpec


@dataclass(frozen=True)
class BatchPlan:
    world_size: int
    per_process: int        # images per process per optimiser step
    micro_batch: int        # images per forward/backward
    accumulation: int       # micro-batches per optimiser step (per_process = micro_batch x accumulation)
    requested: int          # train.global_batch_size (0: not set)

    @property
    def global_batch(self) -> int:
        return self.per_process * self.world_size

    def describe(self) -> str:
        acc = (f" = {self.micro_batch} x {self.accumulation} accumulated micro-batches" if self.accumulation > 1
               else "")
        return (f"global batch {self.global_batch} = {self.world_size} process(es) x {self.per_process} per "
                f"process{acc}")

    def notes(self, stage: StageSpec, lr: float, applies: bool = True) -> List[str]:
        """Where this run's batch differs from what its recipe or the release of its method asked for
        (``applies``: the run trains the released model size, so the release's batch is the reference)."""
        out = []
        if self.requested and self.global_batch != self.requested:
            out.append(f"train.global_batch_size={self.requested} does not divide among {self.world_size} "
                       f"processes: this run trains at a global batch of {self.global_batch} "
                       f"({self.per_process} per process)")
        official = stage.official_global_batch
        if official and applies and self.global_batch != official:
            rule = (f"; the release scales the learning rate with the batch: lr {lr:g} x {self.global_batch}/"
                    f"{official} = {lr * self.global_batch / official:.3g} would follow its rule"
                    if stage.lr_scales_with_batch else "")
            out.append(f"global batch {self.global_batch} differs from the official {stage.name} run's {official} "
                       f"({stage.official_layout}): the learning rate and schedule were tuned for {official}" + rule
                       + ("" if self.requested else "; set train.global_batch_size to train at the official batch "
                          "with gradient accumulation"))
        return out


def plan_batches(global_batch_size: int, micro_batch_size: int, world_size: int) -> BatchPlan:
    """The batch plan for ``world_size`` processes. ``micro_batch_size`` (``data.batch_size``) is the most images
    one forward may take; the accumulation count is the smallest that splits the per-process batch into equal
    micro-batches no larger than that."""
    if micro_batch_size < 1:
        raise ConfigError(f"data.batch_size must be >= 1, got {micro_batch_size}")
    if global_batch_size < 0:
        raise ConfigError(f"train.global_batch_size must be >= 0 (0: data.batch_size per process), "
                          f"got {global_batch_size}")
    if world_size < 1:
        raise ConfigError(f"world size must be >= 1, got {world_size}")
    if global_batch_size == 0:
        return BatchPlan(world_size, micro_batch_size, micro_batch_size, 1, 0)
    per_process = max(1, round(global_batch_size / world_size))
    accumulation = -(-per_process // micro_batch_size)
    while per_process % accumulation:
        accumulation += 1
    return BatchPlan(world_size, per_process, per_process // accumulation, accumulation, global_batch_size)
