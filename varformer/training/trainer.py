"""The trainer every method's training stages share: optimisation, bf16 autocast, gradient accumulation, EMA, checkpoints and exact
resume, DDP, logging, validation, NaN/inf stop and Ctrl-C handling. What differs per stage (model part, parameter
groups, losses, validation, export, figures, which modules recompute activations) is a method's ``TrainTask``
(``varformer.methods.api``); the trainer knows no method.

Hot-loop discipline: nothing reads a device value back to the host except at log / save / validation steps;
running loss sums and the non-finite flag stay on the device between them.

Resume: a checkpoint records the step and how many samples this process has consumed; the endless sampler
(``varformer.training.sampling``) restarts exactly there, and the RNG states of every rank are restored, so a
resumed run is bit-identical to an uninterrupted one (same world size).

Batch: ``varformer.training.batching.plan_batches`` turns ``train.global_batch_size`` into micro-batches of at
most ``data.batch_size`` and an accumulation count; the update follows the last micro-batch of a step, and under
DDP gradients are all-reduced only then (``no_sync`` on the others). Checkpoints fall on step boundaries, so the
samples consumed stay exact.

Non-finite values: the loss is checked at log, validation and save steps; the weights and their EMA are checked
before every checkpoint is written, so a checkpoint never holds NaN/inf (an update can make them non-finite
although the loss that produced it was finite).
"""
from __future__ import annotations

import contextlib
import inspect
import os
import signal
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterator, List, Optional

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import Dataset

from varformer.errors import CheckpointMismatchError, ConfigError, VarformerError
from varformer.methods.activation_checkpointing import enable_activation_checkpointing
from varformer.methods.api import StepOutput, TrainTask
from varformer.runtime import autocast, resolve_precision
from varformer.training import checkpoint as ckpt_io
from varformer.training.batching import plan_batches
from varformer.training.distributed import (DistInfo, any_rank, barrier, gather_objects, rng_state, seed_everything,
                                            set_rng_state)
from varformer.training.ema import ModelEMA
from varformer.training.logging import TrainLogger, mean_over_interval
from varformer.training.optim import build_optimizer, build_scheduler, load_scheduler_state, scheduler_state
from varformer.training.preflight import check_train_settings
from varformer.training.sampling import build_loader


class TrainingDivergedError(VarformerError):
    """The loss became NaN or infinite; the message names the step and the batch's files."""


@dataclass
class FitResult:
    step: int
    status: str                      # "finished", "interrupted", "time_limit"
    checkpoint: Optional[str]
    history: List[Dict[str, float]]  # one entry per log / validation step
    export: Optional[str] = None


@dataclass
class _Window:
    """What accumulates on the device between two log steps (no host sync in between)."""
    bad: torch.Tensor                                   # any non-finite loss since the last check
    first_bad: torch.Tensor                             # the first step with one (-1: none)
    sums: Dict[str, torch.Tensor] = field(default_factory=dict)
    names: Dict[int, List[str]] = field(default_factory=dict)   # step -> file names of its batch
    steps: int = 0
    images: int = 0
    since: float = field(default_factory=time.perf_counter)

    @classmethod
    def on(cls, device: torch.device) -> "_Window":
        return cls(torch.zeros((), dtype=torch.bool, device=device), torch.full((), -1, dtype=torch.long,
                                                                                 device=device))

    def reset_sums(self) -> None:
        self.sums, self.steps, self.images, self.since = {}, 0, 0, time.perf_counter()


class Trainer:
    """``with Trainer(task, dataset, cfg_train, data_cfg, dist_info, out_dir) as t: t.fit()``.

    ``cfg_train`` is the ``train`` config section, ``data_cfg`` the ``data`` section (batch size, workers); the
    data order is ``varformer.training.sampling.InfiniteShardedSampler`` (``shuffle`` as the dataset allows).
    """

    def __init__(self, task: TrainTask, dataset: Dataset, cfg_train, data_cfg, info: DistInfo, out_dir: str,
                 collate_fn: Optional[Callable] = None, config_yaml: Optional[str] = None, progress: bool = True):
        self.cfg, self.data_cfg, self.info, self.out_dir = cfg_train, data_cfg, info, out_dir
        self.config_yaml = config_yaml
        self.dataset, self.collate_fn = dataset, collate_fn
        self.task = task.to(info.device)
        self.model = self.task.model
        check_train_settings(cfg_train, data_cfg)
        self.checkpointed = (enable_activation_checkpointing(self.model, task.checkpointed_modules())
                             if cfg_train.grad_checkpointing else 0)   # modules that recompute their activations
        self.precision = resolve_precision(cfg_train.precision, info.device)
        self.batch = plan_batches(cfg_train.global_batch_size, data_cfg.batch_size, info.world_size)
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        stray = [n for n, p in self.task.named_parameters() if p.requires_grad and not n.startswith("model.")]
        if stray:
            raise ConfigError(f"task parameters outside the model must be frozen: {stray[:5]}")
        self.optimizer = build_optimizer(task.parameter_groups(), cfg_train, info.device)
        self.scheduler = build_scheduler(self.optimizer, cfg_train)
        share = len(dataset) // info.world_size
        if self.batch.micro_batch > share:
            raise ConfigError(f"a micro-batch of {self.batch.micro_batch} (data.batch_size) is larger than this "
                              f"process's share of the dataset ({share} samples): every batch would repeat samples")
        self.step_module = self._wrap_ddp() if info.distributed else self.task
        # After DDP: its constructor broadcasts rank 0's weights, which the EMA must start from on every rank.
        self.ema = ModelEMA(self.model, cfg_train.ema_decay)
        self.step = 0
        self.samples_seen = 0           # by this process: where its sampler resumes
        self.history: List[Dict[str, float]] = []
        self.last_checkpoint: Optional[str] = None
        self.saved_step = -1
        self._stop_requested = False
        self.progress = progress
        self.logger: Optional[TrainLogger] = None

    def close(self) -> None:
        """Let go of the DDP wrapper and its reducer, which hold the process group: call before
        ``cleanup_distributed`` (see there why the group must not be destroyed through the reducer). Idempotent;
        ``with Trainer(...) as t:`` calls it on leaving."""
        self.step_module = None

    def __enter__(self) -> "Trainer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _wrap_ddp(self) -> nn.Module:
        """DDP after freezing: parameters with requires_grad=False never enter its gradient buckets."""
        ids = [self.info.device.index] if self.info.device.type == "cuda" else None
        # buffers are constants (no batch norm): no per-forward buffer broadcast
        sync = ({"forward_sync_buffers": False} if "forward_sync_buffers" in inspect.signature(DDP).parameters
                else {"broadcast_buffers": False})
        return DDP(self.task, device_ids=ids, **sync, find_unused_parameters=self.cfg.find_unused_parameters)

    def _every(self, n: int) -> bool:
        return n > 0 and self.step % n == 0

    # -- checkpoints ---------------------------------------------------------------------------------------------
    def _group_names(self) -> List[str]:
        return [g.get("name", f"group{i}") for i, g in enumerate(self.optimizer.param_groups)]

    def state(self, rngs: List[dict], samples: List[int]) -> dict:
        return {
            "step": self.step, "samples_seen": samples,
            "model": ckpt_io.trainable_state_dict(self.model, self.task.store_frozen_params),
            "ema": self.ema.state_dict(), "optimizer": self.optimizer.state_dict(),
            "param_groups": self._group_names(), "scheduler": scheduler_state(self.scheduler),
            "rng": rngs, "world_size": self.info.world_size, "config": self.config_yaml,
            "batch": {"per_process": self.batch.per_process, "micro_batch": self.batch.micro_batch,
                      "accumulation": self.batch.accumulation},
            "weights_finite": True,  # written only after _check_weights
        }

    def save(self) -> Optional[str]:
        self._check_weights()
        rngs = gather_objects(self.info, rng_state())  # collective: every rank's generators
        samples = gather_objects(self.info, self.samples_seen)
        path = None
        if self.info.is_main:
            path = os.path.join(self.out_dir, ckpt_io.checkpoint_name(self.step))
            ckpt_io.atomic_torch_save(self.state(rngs, samples), path)
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
        saved = ck.get("param_groups") or [f"group{i}" for i in range(len(ck["optimizer"]["param_groups"]))]
        if saved != self._group_names():
            raise CheckpointMismatchError(
                f"{path}: its optimizer has the parameter groups {saved}, this run has {self._group_names()} (a "
                "setting that splits the parameters, e.g. demo.input_weight_lr_scale, differs between the runs); "
                "resume with the original settings")
        self.optimizer.load_state_dict(ck["optimizer"])
        load_scheduler_state(self.scheduler, ck["scheduler"])
        self.step = ck["step"]
        rngs, samples = ck.get("rng") or [], ck.get("samples_seen") or []
        if ck.get("world_size") == self.info.world_size and len(rngs) == self.info.world_size:
            set_rng_state(rngs[self.info.rank])
            self.samples_seen = (int(samples[self.info.rank]) if len(samples) == self.info.world_size
                                 else self.step * self.batch.per_process)
        else:
            seed_everything(self.cfg.seed + self.step, self.info.rank)
            self.samples_seen = self.step * self.batch.per_process
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

    def _batches(self) -> Iterator:
        loader = build_loader(self.dataset, self.batch.micro_batch, num_workers=self.data_cfg.num_workers,
                              pin_memory=bool(self.data_cfg.pin_memory and self.info.device.type == "cuda"),
                              persistent_workers=bool(self.data_cfg.persistent_workers),
                              seed=self.cfg.seed, rank=self.info.rank, world_size=self.info.world_size,
                              start_sample=self.samples_seen, collate_fn=self.collate_fn)
        for batch in loader:
            self.samples_seen += self.task.batch_size(batch)
            yield batch

    def _on_sigint(self, signum, frame):
        if self._stop_requested:  # second Ctrl-C: stop now, without the checkpoint
            raise KeyboardInterrupt
        self._stop_requested = True
        self._log("Ctrl-C: finishing this step and saving a checkpoint (press again to abort without saving)")

    @contextlib.contextmanager
    def _sigint_handler(self):
        old = None
        if self.info.is_main or self.info.distributed:
            try:
                old = signal.signal(signal.SIGINT, self._on_sigint)
            except ValueError:  # not the main thread (e.g. a test harness): Ctrl-C handling stays default
                old = None
        try:
            yield
        finally:
            if old is not None:
                signal.signal(signal.SIGINT, old)

    def _check_finite(self, w: _Window) -> None:
        """Raise with the step and file names if any rank saw a non-finite loss since the last check."""
        local_bad = bool(w.bad.item())
        if not any_rank(self.info, local_bad):
            w.names.clear()
            return
        s = int(w.first_bad.item()) if local_bad else -1
        reports = gather_objects(self.info, (s, w.names.get(s, [])))
        lines = [f"rank {r}: step {st}, files {names}" for r, (st, names) in enumerate(reports) if st >= 0]
        raise TrainingDivergedError(
            "loss became NaN/inf; training stopped without saving. " + "; ".join(lines)
            + f". {self._last_good()}")

    def _last_good(self) -> str:
        if self.last_checkpoint is None:
            return "No checkpoint was written by this run"
        return f"Last good checkpoint: {self.last_checkpoint} (its weights were checked finite when it was written)"

    def _check_weights(self) -> None:
        """Raise before a checkpoint is written if a weight or its EMA is NaN/inf (an update can overflow although
        the loss that produced it was finite)."""
        tensors = [p.detach() for p in self.trainable] + list(self.ema.shadow)
        finite = torch.stack([t.isfinite().all() for t in tensors]).all() if tensors else torch.ones((), dtype=bool)
        if not any_rank(self.info, not bool(finite)):
            return
        names = [n for n, p in self.model.named_parameters() if p.requires_grad]
        bad = [n for n, p in zip(names, self.trainable) if not p.detach().isfinite().all()]
        count = sum(int((~p.detach().isfinite()).sum()) for p in self.trainable)
        raise TrainingDivergedError(
            f"weights became NaN/inf by step {self.step} ({count:,} values in {len(bad)} tensors, e.g. "
            f"{(bad or ['the EMA'])[0]}) although the loss was finite: an update blew up (lower train.lr, or set "
            f"train.grad_clip); training stopped without saving. {self._last_good()}")

    def _train_step(self, batches: Iterator, w: _Window) -> StepOutput:
        """One optimiser step: forward and backward on ``accumulation`` micro-batches (DDP all-reduces the
        gradients after the last one only), then the update; the loss terms join the window's device-side sums."""
        accumulation = self.batch.accumulation
        self.optimizer.zero_grad(set_to_none=True)
        names: List[str] = []
        for i in range(accumulation):
            batch = next(batches)
            names += self.task.batch_names(batch)
            w.images += self.task.batch_size(batch) * self.info.world_size
            batch = self.task.move_batch(batch, self.info.device)
            sync = (self.step_module.no_sync() if self.info.distributed and i < accumulation - 1
                    else contextlib.nullcontext())
            with sync:
                with autocast(self.info.device, self.precision):
                    out: StepOutput = self.step_module(batch)
                (out.loss / accumulation if accumulation > 1 else out.loss).backward()
            finite = torch.isfinite(out.loss.detach())
            w.first_bad = torch.where(~finite & (w.first_bad < 0), torch.full_like(w.first_bad, self.step + 1),
                                      w.first_bad)
            w.bad |= ~finite
            for k, v in out.terms.items():  # the step's value of a term: the mean over its micro-batches
                v = v.detach().float() / accumulation
                w.sums[k] = w.sums[k] + v if k in w.sums else v.clone()
        self.step += 1
        w.names[self.step] = names
        self._grad_norm = self._clip_or_measure_grads()
        self.optimizer.step()
        self.scheduler.step()
        self.ema.update(self.model)
        w.steps += 1
        return out

    def _clip_or_measure_grads(self) -> Optional[torch.Tensor]:
        """Clip to ``train.grad_clip`` (returns the norm), else measure the norm on log steps only."""
        if self.cfg.grad_clip > 0:
            return torch.nn.utils.clip_grad_norm_(self.trainable, self.cfg.grad_clip)
        if self._every(self.cfg.log_every) or self.step == self.cfg.total_iters:
            grads = [p.grad for p in self.trainable if p.grad is not None]
            return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads))) if grads else None
        return None

    def _should_stop(self, w: _Window, log_now: bool, t_start: float) -> bool:
        """Ctrl-C or the time limit; under DDP decided together at log steps (one collective)."""
        over = self.cfg.max_seconds > 0 and time.monotonic() - t_start > self.cfg.max_seconds
        if not self.info.distributed:
            if over and not self._stop_requested:
                self._stop_requested, self._status = True, "time_limit"
            return self._stop_requested
        if not log_now:
            return False
        stop = any_rank(self.info, self._stop_requested or over)
        if stop and not self._stop_requested:
            self._status = "time_limit"
        self._stop_requested = stop
        return stop

    def _log_window(self, w: _Window) -> None:
        now = time.perf_counter()
        values = {f"loss/{k}": v for k, v in mean_over_interval(w.sums, w.steps).items()}
        values["lr"] = self.optimizer.param_groups[0]["lr"]
        values["speed/images_per_s"] = w.images / max(now - w.since, 1e-9)
        if self._grad_norm is not None:
            values["grad_norm"] = float(self._grad_norm)
        if self.info.device.type == "cuda":
            values["memory/max_allocated_gib"] = torch.cuda.max_memory_allocated(self.info.device) / 2 ** 30
        self.logger.scalars(values, self.step)
        self.logger.postfix({"loss": values.get("loss/total", float("nan")), "lr": values["lr"],
                             "img/s": round(values["speed/images_per_s"], 2)})
        if not self.progress:  # no bar: one log line per log step instead, with the time left at this pace
            self._log(f"step {self.step}/{self.cfg.total_iters} " + " ".join(
                f"{k.split('/')[-1]} {v:.4g}" for k, v in values.items() if k != "memory/max_allocated_gib")
                + f" eta {self._eta()}")
        self.history.append({"step": self.step, **values})
        w.reset_sums()

    def _eta(self) -> str:
        done = self.step - self._first_step
        left = (time.monotonic() - self._t_fit) / max(done, 1) * (self.cfg.total_iters - self.step)
        return time.strftime("%H:%M:%S", time.gmtime(left)) if left < 86400 else f"{left / 86400:.1f} days"

    def _after_step(self, out: StepOutput, w: _Window, t_start: float) -> bool:
        """Logging, image grids, validation and checkpoints due after this step; returns whether to stop."""
        cfg = self.cfg
        log_now = self._every(cfg.log_every) or self.step == cfg.total_iters
        if log_now:
            self._check_finite(w)
        stop = self._should_stop(w, log_now, t_start)
        if stop and not log_now:
            self._check_finite(w)
        if (log_now or stop) and w.steps > 0:
            self._log_window(w)
        if self.info.is_main and self._every(cfg.image_every):
            self.logger.image_grid("train/lq_output_gt", out.visuals, self.step)
            for tag, fig in self.task.figures(out, self.step).items():
                self.logger.figure(tag, fig, self.step)
        if self._every(cfg.val_every):
            self._check_finite(w)
            self.validate()
        if self._every(cfg.save_every) or stop:
            self._check_finite(w)
            self.save()
        return stop

    def _start(self) -> None:
        if self.info.is_main:
            os.makedirs(self.out_dir, exist_ok=True)
        resumed = self.resume()
        self.logger = TrainLogger(self.out_dir, self.cfg.total_iters, self.step, enabled=self.info.is_main,
                                  progress=self.progress)
        if resumed:
            self._log(f"resumed from {resumed} at step {self.step}")
        n_train = sum(p.numel() for p in self.trainable)
        n_all = sum(p.numel() for p in self.model.parameters())
        self._log(f"training {n_train:,} of {n_all:,} parameters ({n_all - n_train:,} frozen) on "
                  f"{self.info.world_size} process(es), device {self.info.device}, precision {self.precision}; "
                  f"{self.batch.describe()}" + (f"; activation checkpointing in {self.checkpointed} modules"
                                                 if self.cfg.grad_checkpointing else ""))

    def _finish(self, status: str, w: _Window) -> None:
        """After the last step: a final checkpoint and validation unless the last step already made them."""
        cfg = self.cfg
        if status == "finished":
            self._check_finite(w)
            if self.saved_step != self.step:
                self.save()
        if status in ("finished", "time_limit") and cfg.val_every > 0 and not self._every(cfg.val_every):
            self.validate()  # a time-limited run ends with a validation of what it reached

    def fit(self) -> FitResult:
        if self.step_module is None:
            raise RuntimeError("this Trainer was closed; build a new one to train again")
        self._start()
        w = _Window.on(self.info.device)
        self._status, self._grad_norm = "finished", None
        t_start = self._t_fit = time.monotonic()
        self._first_step = self.step
        self.task.train()
        with self._sigint_handler():
            try:
                if self.cfg.val_at_start and self.step == 0 and self.cfg.val_every > 0:
                    self.validate()
                    w.reset_sums()  # images/s and the eta count training steps from here
                    self._t_fit = time.monotonic()
                batches = self._batches()
                while self.step < self.cfg.total_iters:
                    out = self._train_step(batches, w)
                    self.logger.advance()
                    if self._after_step(out, w, t_start):
                        if self._status != "time_limit":
                            self._status = "interrupted"
                        break
                self._finish(self._status, w)
            finally:
                self.logger.flush()
        export = self._export() if self.info.is_main and self._status in ("finished", "time_limit") else None
        self.logger.close()
        return FitResult(step=self.step, status=self._status, checkpoint=self.last_checkpoint, history=self.history,
                         export=export)

    def _export(self) -> Optional[str]:
        with self.ema.swapped_in(self.model):
            export = self.task.export(self.model, os.path.join(self.out_dir, "final_ema"))
        if export:
            self._log(f"final EMA weights: {export}")
        return export

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
