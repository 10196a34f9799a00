"""RestoreVAR's training length from its training list (docs/restorevar.md, "Training length").

The release trains each stage for 50 epochs at a global batch of 48 (train.sh, train_refiner.sh); an epoch is
``ceil(N / 48)`` steps for a list of N pairs (its class-balanced sampler draws ``ceil(N / 48) * 48`` indices per
epoch), the warm-up lasts one epoch and is flat (``wp0 = 1``), a checkpoint is written every epoch and stage 2
validates twice per epoch. Our recipes count steps, so these follow from N: ``release_schedule(N)``, or
``schedule_for_list("trainset.json")`` for the authors' list (``varformer data check trainset.json`` prints it).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List

from varformer.data.json_list import read_list
from varformer.errors import ConfigError

RELEASE_EPOCHS = 50
RELEASE_GLOBAL_BATCH = 48


@dataclass(frozen=True)
class ReleaseSchedule:
    pairs: int
    epochs: int = RELEASE_EPOCHS
    global_batch: int = RELEASE_GLOBAL_BATCH

    @property
    def iters_per_epoch(self) -> int:
        return math.ceil(self.pairs / self.global_batch)

    @property
    def total_iters(self) -> int:
        return self.epochs * self.iters_per_epoch

    @property
    def warmup_iters(self) -> int:
        return self.iters_per_epoch

    def overrides(self, stage: int) -> List[str]:
        """The overrides (``key=value``) for ``varformer train`` with ``configs/restorevar_stage{stage}.yaml``."""
        out = [f"train.total_iters={self.total_iters}", f"train.warmup_iters={self.warmup_iters}",
               f"train.save_every={self.iters_per_epoch}"]
        if stage == 2:
            out.append(f"train.val_every={max(1, self.iters_per_epoch // 2)}")
        return out

    def describe(self) -> str:
        return (f"{self.pairs:,} pairs: {self.epochs} epochs x ceil({self.pairs:,} / {self.global_batch}) = "
                f"{self.epochs} x {self.iters_per_epoch:,} = {self.total_iters:,} steps at global batch "
                f"{self.global_batch}; warm-up {self.warmup_iters:,} steps (one epoch)")


def release_schedule(pairs: int, epochs: int = RELEASE_EPOCHS, global_batch: int = RELEASE_GLOBAL_BATCH
                     ) -> ReleaseSchedule:
    if pairs < 1 or epochs < 1 or global_batch < 1:
        raise ConfigError(f"a schedule needs pairs, epochs and batch >= 1, got {pairs}, {epochs}, {global_batch}")
    return ReleaseSchedule(pairs, epochs, global_batch)


def schedule_for_list(path: str, epochs: int = RELEASE_EPOCHS, global_batch: int = RELEASE_GLOBAL_BATCH
                      ) -> ReleaseSchedule:
    """The release's schedule for a training list file (its entry count; the files themselves are not opened)."""
    return release_schedule(len(read_list(path)), epochs, global_batch)
