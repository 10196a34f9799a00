"""What a training run checks before it builds anything: the numbers of its config, its training data, its
validation set and (the method's stage checks them: ``StageSpec.check_inputs``) its settings and weight files.
``varformer train`` runs these first, so a missing folder or file stops the run in seconds with one line instead
of after the model (and VGG19) were built; ``--dry-run`` prints what they found (``varformer.training.plan``).

Weight files are located, not loaded: a backbone file is looked up where the run will look (the path in the
config, ``checkpoints/``, the Hugging Face cache); a model file (``model.weights``, ``model.stage1_weights``) is
read memory-mapped, which reads its metadata, not its tensors.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Tuple

from torch.utils.data import Dataset

from varformer.data.benchmark_data import benchmark_dataset
from varformer.data.catalog import expand_names
from varformer.errors import ConfigError, DataError
from varformer.methods.api import StageSpec
from varformer.runtime import check_precision


@dataclass
class Preflight:
    dataset: Dataset                                        # the training data (files listed, none read yet)
    validation: List[Tuple[str, int]] = field(default_factory=list)  # (benchmark, images validated on)
    weights: List[str] = field(default_factory=list)        # what each weight file is and where it was found
    notes: List[str] = field(default_factory=list)          # things that will happen at start (e.g. a download)


def check_train_settings(cfg, data_cfg) -> None:
    """The ``train`` and ``data`` numbers a run cannot start with (checked before anything is built)."""
    for key in ("total_iters", "log_every", "save_every", "val_every", "image_every", "val_images", "keep_last",
                "global_batch_size"):
        if getattr(cfg, key) < 0:
            raise ConfigError(f"train.{key} must be >= 0, got {getattr(cfg, key)}")
    if cfg.total_iters == 0:
        raise ConfigError("train.total_iters must be > 0")
    if cfg.log_every == 0:
        raise ConfigError("train.log_every must be > 0")
    if data_cfg.batch_size < 1:
        raise ConfigError(f"data.batch_size must be >= 1, got {data_cfg.batch_size}")
    if data_cfg.num_workers < 0:
        raise ConfigError(f"data.num_workers must be >= 0, got {data_cfg.num_workers}")
    if cfg.lr <= 0:
        raise ConfigError(f"train.lr must be > 0, got {cfg.lr}")
    check_precision(cfg.precision)


def check_run_inputs(cfg, stage: StageSpec) -> Preflight:
    """Every check above, then the stage's own (its settings and weight files), in order of cost; returns what
    was found. Raises one ``VarformerError`` line."""
    check_train_settings(cfg.train, cfg.data)
    found = stage.check_inputs(cfg)
    dataset = stage.training_data(cfg)
    return Preflight(dataset, validation_sets(cfg), found.weights, found.notes)


def validation_sets(cfg) -> List[Tuple[str, int]]:
    """The validation benchmarks and how many images of each the run validates on (``[]``: no validation)."""
    t = cfg.train
    if t.val_every <= 0 or t.val_images <= 0:
        return []
    names = expand_names(list(cfg.eval.benchmarks))
    if not names:
        raise ConfigError(f"train.val_every={t.val_every} but eval.benchmarks is empty: name the validation set "
                          "(e.g. eval.benchmarks=[test100]) or set train.val_every=0")
    sizes = []
    for name in names:
        try:
            sizes.append(len(benchmark_dataset(name, cfg.eval.root)))
        except DataError as e:
            raise DataError(f"validation set: {e} (eval.root={cfg.eval.root}); set eval.root to the folder that "
                            f"holds it, or train.val_every=0 to train without validation") from None
    left, i = t.val_images, 0
    counts = [0] * len(names)
    while left > 0 and any(i < n for n in sizes):  # round-robin, as build_val_pairs takes them
        for j, n in enumerate(sizes):
            if i < n and left > 0:
                counts[j] += 1
                left -= 1
        i += 1
    return [(name, c) for name, c in zip(names, counts)]
