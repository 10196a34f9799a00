"""A small real training task for the trainer tests: a frozen conv stem and a trainable two-layer conv head,
random crops drawn from the main process' RNG, dropout (so RNG state matters), MSE to a fixed target."""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import Dataset

from varformer.config import load_config
from varformer.training.trainer import StepOutput, TrainTask


class TinyPairs(Dataset):
    def __init__(self, n: int = 12, size: int = 12, crop: int = 8, nan_index: int = -1):
        g = torch.Generator().manual_seed(0)
        self.lq = torch.rand(n, 3, size, size, generator=g)
        self.gt = (self.lq * 0.5 + 0.25).clamp(0, 1)
        self.crop, self.nan_index = crop, nan_index

    def __len__(self):
        return len(self.lq)

    def __getitem__(self, i):
        top, left = torch.randint(0, self.lq.shape[-1] - self.crop + 1, (2,)).tolist()
        sl = (slice(None), slice(top, top + self.crop), slice(left, left + self.crop))
        lq = self.lq[i][sl].clone()
        if i == self.nan_index:
            lq[0, 0, 0] = float("nan")
        return {"lq": lq, "gt": self.gt[i][sl].clone(), "name": f"img_{i:03d}.png"}


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)         # frozen ("backbone")
        self.head = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.GELU(), nn.Dropout(0.1),
                                  nn.Conv2d(8, 3, 3, padding=1))
        self.register_buffer("scale", torch.tensor(1.0))
        self.stem.requires_grad_(False)

    def forward(self, x):
        return x + self.scale * self.head(self.stem(x))


class TinyTask(TrainTask):
    def __init__(self, interrupt_at: int = -1):
        super().__init__()
        self.model = TinyNet()
        self.calls, self.interrupt_at, self.trainer = 0, interrupt_at, None

    def forward(self, batch):
        self.calls += 1
        if self.calls == self.interrupt_at and self.trainer is not None:
            self.trainer._on_sigint(None, None)  # what a Ctrl-C during this step does
        out = self.model(batch["lq"])
        mse = (out.float() - batch["gt"]).pow(2).mean()
        return StepOutput(loss=mse, terms={"total": mse, "mse": mse},
                          visuals={"lq": batch["lq"], "out": out.clamp(0, 1), "gt": batch["gt"]})


def tiny_config(out_dir, **train):
    overrides = [f"train.output_dir={out_dir}", "train.total_iters=6", "train.save_every=3", "train.log_every=1",
                 "train.val_every=0", "train.image_every=2", "train.milestones=[2,4]", "train.lr=1e-2",
                 "train.ema_decay=0.9", "train.precision=fp32", "train.device=cpu", "data.batch_size=2",
                 "data.num_workers=0", "train.seed=3"]
    overrides += [f"train.{k}={v}" for k, v in train.items()]
    return load_config(None, overrides)
