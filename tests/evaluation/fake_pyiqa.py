"""A stand-in for pyiqa (not installed in CI): ``create_metric(name, device=..., as_loss=False)`` returns a module
that scores an image by a fixed formula of its pixels and records what it was given, so tests can check which
pixels a metric saw. FID reads its two folders as pyiqa's does (every image file in each)."""
import os
import types

import numpy as np
import torch
from PIL import Image

SCALE = {"musiq": 100.0, "clipiqa": 1.0, "maniqa": 1.0, "liqe": 5.0, "qalign": 5.0, "niqe": 10.0, "piqe": 100.0}


def folder_mean(folder):
    files = sorted(f for f in os.listdir(folder) if f.endswith(".png"))
    return float(np.mean([np.asarray(Image.open(os.path.join(folder, f)), dtype=np.float64).mean() for f in files]))


class FakeMetric(torch.nn.Module):
    def __init__(self, name, device):
        super().__init__()
        self.name, self.device = name, device
        self.lower_better = name in ("niqe", "piqe", "fid")
        self.seen = []

    def forward(self, target, ref=None, **kwargs):
        if self.name == "fid":  # two folders, one number
            self.seen.append((sorted(os.listdir(target)), sorted(os.listdir(ref)), kwargs))
            return abs(folder_mean(target) - folder_mean(ref))
        assert torch.is_tensor(target) and target.dim() == 4 and target.shape[1] == 3
        assert 0 <= float(target.min()) and float(target.max()) <= 1  # pyiqa's own input check
        self.seen.append(target.detach().cpu().clone())
        return (target.mean(dim=(1, 2, 3)) * SCALE[self.name]).reshape(-1, 1)


def make_fake_pyiqa(version="0.1.13"):
    mod = types.ModuleType("pyiqa")
    mod.__version__ = version
    mod.created = {}

    def create_metric(metric_name, as_loss=False, device=None, **kwargs):
        assert not as_loss and not kwargs
        m = FakeMetric(metric_name, device)
        mod.created[metric_name] = m
        return m

    mod.create_metric = create_metric
    return mod


def install_weights(torch_home, hf_cache, names):
    """Empty stand-ins for every file the named metrics read, where pyiqa (and the hub cache) look for them."""
    from varformer.evaluation.iqa import IQA_METRICS
    for n in names:
        for f in IQA_METRICS[n].files:
            if f.store == "hf":
                repo = os.path.join(hf_cache, "models--" + f.name.replace("/", "--"))
                os.makedirs(os.path.join(repo, "refs"), exist_ok=True)
                with open(os.path.join(repo, "refs", "main"), "w") as fh:
                    fh.write("abc123")
                os.makedirs(os.path.join(repo, "snapshots", "abc123"), exist_ok=True)
                open(os.path.join(repo, "snapshots", "abc123", f.file), "w").close()
            else:
                os.makedirs(os.path.join(torch_home, "hub", f.store), exist_ok=True)
                open(os.path.join(torch_home, "hub", f.store, f.name), "w").close()
