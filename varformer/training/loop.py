"""The trainer both stages share: optimisation, bf16 autocast, EMA, checkpoints and exact resume, DDP, logging,
validation, NaN/inf stop and Ctrl-C handling. What differs per stage (model part, losses, data, validation) is a
``TrainTask`` (see ``stages.py``).

Hot-loop discipline: nothing reads a device value back to the host except at log / save / validation steps;
running loss sums and the non-finite flag stay on the device between them.
"""
from __future__ import annotations

import contextlib
import inspect
import os
import signal
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, Dataset, Sampler

from varformer.errors import CheckpointMismatchError, ConfigError, VarformerError
from varformer.training import checkpoint as ckpt_io
from varformer.training.data import ResumableSampler, ShardedShuffleSampler
from varformer.training.distributed import (DistInfo, any_rank, barrier, gather_objects, rng_state, seed_everything,
                                            set_rng_state)
from varformer.training.ema import ModelEMA
from varformer.training.logging import TrainLogger, mean_over_interval


def _has_len(sampler) -> bool:
    try:
        len(sampler)
    except TypeError:
        return False
    return True


class TrainingDivergedError(VarformerError):
    """The loss became NaN or infinite; the message names the step and the batch's files."""


@dataclass
class StepOutput:
    """What a task's forward returns for one batch."""
    loss: torch.Tensor                                    # the scalar that is back-propagated
    terms: Dict[str, torch.Tensor]                        # logged per term (weighted terms and plain metrics)
    visuals: Dict[str, torch.Tensor] = field(default_factory=dict)    # name -> (B,3,H,W) in [0,1], e.g. lq/out/gt
    dae_weights: Dict[str, torch.Tensor] = field(default_factory=dict)  # level -> (B,10), stage 2 only


class TrainTask(nn.Module):
    """One training stage. ``model`` is the network being trained (what checkpoints and EMA hold); ``forward(batch)``
    computes the losses. Frozen parameters must have ``requires_grad=False`` before the trainer starts (DDP then
    leaves them out of its gradient buckets)."""

    model: nn.Module
    store_frozen_params: bool = False  # True when frozen weights come from a seed, not from a weight file

    def forward(self, batch) -> StepOutput:  # pragma: no cover - interface
        raise TypeError(f"{type(self).__name__} must define forward(batch) -> StepOutput")

    def batch_names(self, batch) -> List[str]:
        names = batch.get("name") if isinstance(batch, dict) else None
        return list(names) if names is not None else []

    def batch_size(self, batch) -> int:
        first = next(iter(batch.values())) if isinstance(batch, dict) else batch[0]
        return int(first.shape[0])

    def move_batch(self, batch, device: torch.device):
        nb = device.type == "cuda"
        if isinstance(batch, dict):
            return {k: (v.to(device, non_blocking=nb) if torch.is_tensor(v) else v) for k, v in batch.items()}
        return [v.to(device, non_blocking=nb) if torch.is_tensor(v) else v for v in batch]

    def validate(self, model: nn.Module, step: int) -> Dict[str, float]:
        """Validation metrics of ``model`` (the EMA weights are swapped in); rank 0 only. Default: none."""
        return {}

    def validation_visuals(self) -> Dict[str, torch.Tensor]:
        """Image columns from the last validation (for the TensorBoard grid); default: none."""
        return {}

    def export(self, model: nn.Module, path: str) -> Optional[str]:
        """Write the final weights (EMA swapped in) in the project's model format; default: nothing."""
        return None


@dataclass
class FitResult:
    step: int
    status: str                      # "finished", "interrupted", "time_limit"
    checkpoint: Optional[str]
    history: List[Dict[str, float]]  # one entry per log / validation step
    export: Optional[str] = None


def autocast_context(device: torch.device, precision: str):
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    raise ConfigError(f"train.precision must be 'bf16' or 'fp32', got '{precision}'")


def build_optimizer(params: List[nn.Parameter], cfg, device: torch.device,
                    input_weights: Sequence[nn.Parameter] = ()) -> torch.optim.Optimizer:
    """Adam over ``params``; with ``cfg.input_weight_lr_scale != 1`` the trainable ``input_weights`` (the global
    residual blend weight) form a second parameter group at ``lr * input_weight_lr_scale`` (the schedule scales
    both groups alike)."""
    if not params:
        raise ConfigError("nothing to train: every parameter of the model is frozen")
    if cfg.input_weight_lr_scale <= 0:
        raise ConfigError(f"train.input_weight_lr_scale must be > 0, got {cfg.input_weight_lr_scale}")
    kwargs = dict(lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
    if device.type == "cuda" and cfg.fused_adam:
        kwargs["fused"] = True  # one kernel for the whole update instead of a launch per tensor
    blend_ids = ({id(p) for p in input_weights if p.requires_grad} if cfg.input_weight_lr_scale != 1 else set())
    if not blend_ids:
        return torch.optim.Adam(params, **kwargs)
    groups = [{"params": [p for p in params if id(p) not in blend_ids]},
              {"params": [p for p in params if id(p) in blend_ids], "lr": cfg.lr * cfg.input_weight_lr_scale}]
    return torch.optim.Adam([g for g in groups if g["params"]], **kwargs)


class Trainer:
    """``Trainer(task, dataset, cfg_train, data_cfg, dist_info, out_dir).fit()``.

    ``cfg_train`` is the ``train`` config section, ``data_cfg`` the ``data`` section (batch size, workers);
    ``sampler`` may be given (any sampler with ``set_epoch``); by default indices are shuffled per epoch and
    sharded across ranks.
    """

    def __init__(self, task: TrainTask, dataset: Dataset, cfg_train, data_cfg, info: DistInfo, out_dir: str,
                 sampler: Optional[Sampler] = None, collate_fn: Optional[Callable] = None,
                 config_yaml: Optional[str] = None, progress: bool = True):
        self.cfg, self.data_cfg, self.info, self.out_dir = cfg_train, data_cfg, info, out_dir
        self.config_yaml = config_yaml
        self.task = task.to(info.device)
        self.model = self.task.model
        self.precision = cfg_train.precision
        autocast_context(info.device, self.precision)  # validates the name now rather than at step 1
        self._check_cfg()

        self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        stray = [n for n, p in self.task.named_parameters() if p.requires_grad and not n.startswith("model.")]
        if stray:
            raise ConfigError(f"task parameters outside the model must be frozen: {stray[:5]}")
        named = dict(self.model.named_parameters())
        blend = [named[n] for n in getattr(self.model, "input_weight_parameter_names", ()) if n in named]
        self.optimizer = build_optimizer(self.trainable, cfg_train, info.device, blend)
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(self.optimizer, milestones=list(cfg_train.milestones),
                                                              gamma=cfg_train.gamma)
        # DDP after freezing: parameters with requires_grad=False never enter its gradient buckets.
        if info.distributed:
            ids = [info.device.index] if info.device.type == "cuda" else None
            # buffers are constants (no batch norm): no per-forward buffer broadcast
            sync = ({"forward_sync_buffers": False} if "forward_sync_buffers" in inspect.signature(DDP).parameters
                    else {"broadcast_buffers": False})
            self.step_module: nn.Module = DDP(self.task, device_ids=ids, **sync,
                                              find_unused_parameters=cfg_train.find_unused_parameters)
        else:
            self.step_module = self.task
        # After DDP: its constructor broadcasts rank 0's weights, which the EMA must start from on every rank.
        self.ema = ModelEMA(self.model, cfg_train.ema_decay)

        base = sampler if sampler is not None else ShardedShuffleSampler(len(dataset), info.rank, info.world_size,
                                                                         seed=cfg_train.seed)
        bs = data_cfg.batch_size
        # Two kinds of sampler: finite epochs (wrapped so an epoch can start part-way) or an endless stream with
        # a ``start`` (samples of this rank already consumed), e.g. varformer.data.training.InfiniteShardedSampler.
        self.endless = hasattr(base, "start") and not _has_len(base)
        self.sampler = base if self.endless else ResumableSampler(base)
        if not self.endless and len(self.sampler) // bs <= 0:
            raise ConfigError(f"data.batch_size={bs} is larger than this rank's share of the dataset "
                              f"({len(self.sampler)} samples)")
        workers = data_cfg.num_workers
        # The loader draws its workers' base seed from this generator, re-seeded per epoch, instead of from the
        # global RNG: creating an iterator on resume must not shift the global random stream.
        self.loader_generator = torch.Generator()
        self.loader = DataLoader(dataset, batch_size=bs, sampler=self.sampler, drop_last=True,
                                 generator=self.loader_generator,
                                 num_workers=workers, collate_fn=collate_fn,
                                 pin_memory=bool(data_cfg.pin_memory and info.device.type == "cuda"),
                                 persistent_workers=bool(data_cfg.persistent_workers and workers > 0),
                                 prefetch_factor=4 if workers > 0 else None)
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.history: List[Dict[str, float]] = []
        self.last_checkpoint: Optional[str] = None
        self.saved_step = -1
        self._stop_requested = False
        self.progress = progress

    # ------------------------------------------------------------------------------------------------------------
    def _check_cfg(self) -> None:
        c = self.cfg
        for key in ("total_iters", "log_every", "save_every", "val_every", "image_every"):
            if getattr(c, key) < 0:
                raise ConfigError(f"train.{key} must be >= 0, got {getattr(c, key)}")
        if c.total_iters == 0:
            raise ConfigError("train.total_iters must be > 0")
        if c.log_every == 0:
            raise ConfigError("train.log_every must be > 0")

    def _every(self, n: int) -> bool:
        return n > 0 and self.step % n == 0

    # -- checkpoints ---------------------------------------------------------------------------------------------
    def state(self, rngs: List[dict]) -> dict:
        return {
            "step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
            "model": ckpt_io.trainable_state_dict(self.model, self.task.store_frozen_params), "ema": self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "rng": rngs, "world_size": self.info.world_size, "config": self.config_yaml,
        }

    def save(self) -> Optional[str]:
        rngs = gather_objects(self.info, rng_state())  # collective: every rank's generators
        path = None
        if self.info.is_main:
            path = os.path.join(self.out_dir, ckpt_io.checkpoint_name(self.step))
            ckpt_io.atomic_torch_save(self.state(rngs), path)
            ckpt_io.prune_checkpoints(self.out_dir, self.cfg.keep_last)
            self.last_checkpoint = path
        self.saved_step = self.step  # on every rank (only rank 0 knows the path)
        barrier(self.info)
        return path

    def resume(self) -> Optional[str]:
        found = ckpt_io.find_resume_checkpoint(self.cfg.resume, self.out_dir)
        if found is None:
            return None
        path, ck = found
        ckpt_io.load_trainable_state(self.model, ck["model"])
        self.ema.load_state_dict(ck["ema"])
        saved_groups = len(ck["optimizer"]["param_groups"])
        if saved_groups != len(self.optimizer.param_groups):
            raise CheckpointMismatchError(
                f"{path}: its optimizer has {saved_groups} parameter group(s), this run has "
                f"{len(self.optimizer.param_groups)} (train.input_weight_lr_scale differs between the runs: a scale "
                "other than 1 gives the global-residual weight its own group); resume with the original value")
        self.optimizer.load_state_dict(ck["optimizer"])
        self.scheduler.load_state_dict(ck["scheduler"])
        self.step, self.epoch, self.batch_in_epoch = ck["step"], ck["epoch"], ck["batch_in_epoch"]
        rngs = ck.get("rng") or []
        if ck.get("world_size") == self.info.world_size and len(rngs) == self.info.world_size:
            set_rng_state(rngs[self.info.rank])
        else:
            seed_everything(self.cfg.seed + self.step, self.info.rank)
            self._log(f"resume: checkpoint written by {ck.get('world_size')} processes, now {self.info.world_size}: "
                      "random streams re-seeded and data re-sharded (not bit-identical to an uninterrupted run)")
        self.last_checkpoint = path
        self.saved_step = self.step
        return path

    # -- the loop ------------------------------------------------------------------------------------------------
    def _log(self, text: str) -> None:
        if self.info.is_main:
            if self.logger is not None and self.logger.enabled:
                self.logger.message(text)
            else:
                print(text, flush=True)

    def _next_batch(self):
        while True:
            if self._iter is None:
                if self.endless:
                    self.sampler.start = self.batch_in_epoch * self.data_cfg.batch_size
                else:
                    self.sampler.set_epoch(self.epoch)
                    self.sampler.skip = self.batch_in_epoch * self.data_cfg.batch_size
                self.loader_generator.manual_seed(
                    (self.cfg.seed * 1_000_003 + self.epoch * 1_009 + self.info.rank) % (2 ** 63))
                self._iter = iter(self.loader)
            try:
                batch = next(self._iter)
            except StopIteration:
                self._iter = None
                self.epoch += 1
                self.batch_in_epoch = 0
                continue
            self.batch_in_epoch += 1
            return batch

    def _on_sigint(self, signum, frame):
        if self._stop_requested:  # second Ctrl-C: stop now, without the checkpoint
            raise KeyboardInterrupt
        self._stop_requested = True
        self._log("Ctrl-C: finishing this step and saving a checkpoint (press again to abort without saving)")

    def _check_finite(self, bad: torch.Tensor, first_bad: torch.Tensor, recent_names: Dict[int, List[str]]) -> None:
        """Raise with the step and file names if any rank saw a non-finite loss since the last check."""
        local_bad = bool(bad.item())
        if not any_rank(self.info, local_bad):
            recent_names.clear()
            return
        s = int(first_bad.item()) if local_bad else -1
        reports = gather_objects(self.info, (s, recent_names.get(s, [])))
        lines = [f"rank {r}: step {st}, files {names}" for r, (st, names) in enumerate(reports) if st >= 0]
        last = self.last_checkpoint or "none written yet"
        raise TrainingDivergedError(
            "loss became NaN/inf; training stopped without saving. " + "; ".join(lines)
            + f". Last good checkpoint: {last}")

    def fit(self) -> FitResult:
        cfg, info = self.cfg, self.info
        if info.is_main:
            os.makedirs(self.out_dir, exist_ok=True)
        self.logger = None
        resumed = self.resume()
        self.logger = TrainLogger(self.out_dir, cfg.total_iters, self.step, enabled=info.is_main,
                                  progress=self.progress)
        if resumed:
            self._log(f"resumed from {resumed} at step {self.step}")
        n_train = sum(p.numel() for p in self.trainable)
        n_all = sum(p.numel() for p in self.model.parameters())
        self._log(f"training {n_train:,} of {n_all:,} parameters ({n_all - n_train:,} frozen) on "
                  f"{info.world_size} process(es), device {info.device}, precision {self.precision}")

        self._iter = None
        dev = info.device
        bad = torch.zeros((), dtype=torch.bool, device=dev)
        first_bad = torch.full((), -1, dtype=torch.long, device=dev)
        sums: Dict[str, torch.Tensor] = {}
        recent_names: Dict[int, List[str]] = {}
        n_logged, images_since, t_last = 0, 0, time.perf_counter()
        t_start = time.monotonic()
        status = "finished"
        old_handler = None
        if info.is_main or info.distributed:
            try:
                old_handler = signal.signal(signal.SIGINT, self._on_sigint)
            except ValueError:  # not the main thread (e.g. a test harness): Ctrl-C handling stays default
                old_handler = None
        self.task.train()
        try:
            if cfg.val_at_start and self.step == 0 and cfg.val_every > 0:
                self.validate()
            while self.step < cfg.total_iters:
                batch = self._next_batch()
                names = self.task.batch_names(batch)
                bsz = self.task.batch_size(batch)
                batch = self.task.move_batch(batch, dev)
                with autocast_context(dev, self.precision):
                    out: StepOutput = self.step_module(batch)
                loss = out.loss
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.step += 1
                log_now = self._every(cfg.log_every) or self.step == cfg.total_iters
                grad_norm = None
                if cfg.grad_clip > 0:
                    grad_norm = torch.nn.utils.clip_grad_norm_(self.trainable, cfg.grad_clip)
                elif log_now:
                    grads = [p.grad for p in self.trainable if p.grad is not None]
                    grad_norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads))) if grads else None
                self.optimizer.step()
                self.scheduler.step()
                self.ema.update(self.model)

                finite = torch.isfinite(loss.detach())
                first_bad = torch.where(~finite & (first_bad < 0), torch.full_like(first_bad, self.step), first_bad)
                bad |= ~finite
                recent_names[self.step] = names
                for k, v in out.terms.items():
                    v = v.detach().float()
                    sums[k] = sums[k] + v if k in sums else v.clone()
                n_logged += 1
                images_since += bsz * info.world_size
                self.logger.advance()

                if not info.distributed and cfg.max_seconds > 0 and time.monotonic() - t_start > cfg.max_seconds:
                    self._stop_requested, status = True, "time_limit"
                stop_now = self._stop_requested if not info.distributed else False
                if log_now or stop_now:
                    self._check_finite(bad, first_bad, recent_names)
                    if info.distributed:
                        over = cfg.max_seconds > 0 and time.monotonic() - t_start > cfg.max_seconds
                        stop_now = any_rank(info, self._stop_requested or over)
                        if stop_now and not self._stop_requested:
                            status = "time_limit"
                        self._stop_requested = stop_now
                if (log_now or stop_now) and n_logged > 0:
                    now = time.perf_counter()
                    values = {f"loss/{k}": v for k, v in mean_over_interval(sums, n_logged).items()}
                    values["lr"] = self.optimizer.param_groups[0]["lr"]
                    values["speed/images_per_s"] = images_since / max(now - t_last, 1e-9)
                    if grad_norm is not None:
                        values["grad_norm"] = float(grad_norm)
                    if dev.type == "cuda":
                        values["memory/max_allocated_gib"] = torch.cuda.max_memory_allocated(dev) / 2 ** 30
                    self.logger.scalars(values, self.step)
                    self.logger.postfix({"loss": values.get("loss/total", float("nan")), "lr": values["lr"],
                                         "img/s": round(values["speed/images_per_s"], 2)})
                    if not self.progress:  # no bar: one log line per log step instead
                        self._log(f"step {self.step}/{cfg.total_iters} " + " ".join(
                            f"{k.split('/')[-1]} {v:.4g}" for k, v in values.items() if k != "memory/max_allocated_gib"))
                    self.history.append({"step": self.step, **values})
                    sums, n_logged, images_since, t_last = {}, 0, 0, now
                if info.is_main and self._every(cfg.image_every):
                    self.logger.image_grid("train/lq_output_gt", out.visuals, self.step)
                    self.logger.dae_weights(out.dae_weights, self.step)
                if self._every(cfg.val_every):
                    self._check_finite(bad, first_bad, recent_names)
                    self.validate()
                if self._every(cfg.save_every) or stop_now:
                    self._check_finite(bad, first_bad, recent_names)
                    self.save()
                if stop_now:
                    if status != "time_limit":
                        status = "interrupted"
                    break
            else:
                self._check_finite(bad, first_bad, recent_names)
                if self.saved_step != self.step:
                    self.save()
                if cfg.val_every > 0 and not self._every(cfg.val_every):
                    self.validate()
            if status == "time_limit" and cfg.val_every > 0 and not self._every(cfg.val_every):
                self.validate()  # a time-limited run (the demo) ends with a validation of what it reached
        finally:
            if old_handler is not None:
                signal.signal(signal.SIGINT, old_handler)
            self.logger.flush()
        export = None
        if info.is_main and status in ("finished", "time_limit"):
            with self.ema.swapped_in(self.model):
                export = self.task.export(self.model, os.path.join(self.out_dir, "final_ema"))
            if export:
                self._log(f"final EMA weights: {export}")
        self.logger.close()
        return FitResult(step=self.step, status=status, checkpoint=self.last_checkpoint, history=self.history,
                         export=export)

    def validate(self) -> Dict[str, float]:
        metrics: Dict[str, float] = {}
        if self.info.is_main:
            self.task.eval()
            with self.ema.swapped_in(self.model), torch.no_grad():
                metrics = self.task.validate(self.model, self.step)
            self.task.train()
            if metrics:
                self.logger.scalars({f"val/{k}": v for k, v in metrics.items()}, self.step)
                self.logger.image_grid("val/lq_output_gt", self.task.validation_visuals(), self.step)
                self.logger.message(f"step {self.step} validation: "
                                    + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
                self.history.append({"step": self.step, **{f"val/{k}": v for k, v in metrics.items()}})
        barrier(self.info)
        return metrics

