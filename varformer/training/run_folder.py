"""A training run's output folder: one run per folder, continued only by the same run.

- **Lock**: ``.varformer.lock`` (PID and host) while a run writes into the folder; a second run into it stops
  with one line. A lock whose process is gone (same host) is stale and removed.
- **State** (``open_run_folder``): an empty or new folder starts a run. A folder that holds a run (checkpoints,
  ``config.yaml``, ``final_ema.pt``, ``tb/``) is continued by ``train.resume=auto`` only when the newest
  readable checkpoint was written by a run whose resolved config matches this one, except for the keys in
  ``MAY_CHANGE`` (how long, how often to log/save/validate, where and on what the run executes); otherwise the
  error names the differing keys and the ways out. ``train.resume=none`` into a used folder is refused;
  ``--overwrite`` removes the old run's files first (and only those).
- Interrupted checkpoint writes (``ckpt_*.pt.tmp.PID``) of dead processes are removed under the lock.

The config comparison reads only ``step`` and ``config`` of the checkpoint (memory-mapped), not its tensors.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import socket
import warnings
from dataclasses import dataclass, field
from typing import Iterator, List, Optional

from varformer.config import config_differences, config_from_yaml
from varformer.errors import CheckpointMismatchError, ConfigError, RunFolderError
from varformer.training import checkpoint as ckpt_io

LOCK_NAME = ".varformer.lock"
RUN_FILES = ("config.yaml", "final_ema.pt", "tb")
# keys a continued run may change: length, logging/saving/validation cadence, where and how it executes, and
# the validation set (eval.*), which does not change what is trained
MAY_CHANGE = ("train.total_iters", "train.resume", "train.output_dir", "train.device", "train.max_seconds",
              "train.log_every", "train.save_every", "train.keep_last", "train.image_every", "train.val_every",
              "train.val_images", "train.val_at_start", "train.find_unused_parameters", "train.fused_adam",
              "train.grad_checkpointing", "data.num_workers", "data.pin_memory", "data.persistent_workers",
              "model.local_files_only", "eval.")


@dataclass
class FolderDecision:
    folder: str
    resume_path: Optional[str] = None       # the checkpoint this run continues (None: a new run)
    resume_step: int = 0
    notes: List[str] = field(default_factory=list)

    def describe(self) -> str:
        if self.resume_path:
            return f"{self.folder}: continues the run there from {self.resume_path} at step {self.resume_step}"
        return f"{self.folder}: a new run"


def _used(folder: str) -> List[str]:
    """What in ``folder`` belongs to a run (checkpoints, config.yaml, final_ema.pt, tb/)."""
    if not os.path.isdir(folder):
        return []
    n = len(ckpt_io.list_checkpoints(folder))
    found = [f"{n} checkpoint(s)"] if n else []
    return found + [f for f in RUN_FILES if os.path.exists(os.path.join(folder, f))]


def _ways_out() -> str:
    return ("pass --overwrite to replace the old run, or start a new one in another folder "
            "(train.output_dir=NEW train.resume=none)")


def _remove_run_files(folder: str) -> List[str]:
    removed = []
    for _, path in ckpt_io.list_checkpoints(folder):
        os.remove(path)
        removed.append(os.path.basename(path))
    for name in RUN_FILES:
        path = os.path.join(folder, name)
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.exists(path):
            os.remove(path)
        else:
            continue
        removed.append(name)
    return removed


def _newest_readable(folder: str):
    for step, path in reversed(ckpt_io.list_checkpoints(folder)):
        try:
            return path, ckpt_io.read_checkpoint(path, mmap=True)
        except CheckpointMismatchError as e:  # truncated or foreign: skipped, never counted
            warnings.warn(f"resume=auto: skipping unreadable checkpoint (step {step}): {e}", RuntimeWarning)
    return None, None


def _read(path: str) -> Optional[str]:
    try:
        with open(path) as fh:
            return fh.read()
    except OSError:
        return None


def check_same_run(ckpt: dict, path: str, cfg) -> None:
    """Refuse to continue ``path`` with a config that differs from the one that wrote it (``MAY_CHANGE`` aside)."""
    if not ckpt.get("config"):
        return  # written by a bare Trainer without a config (tests, scripts): nothing to compare
    try:
        old = config_from_yaml(ckpt["config"], f"{path} (its config)")
    except ConfigError as e:
        raise RunFolderError(f"cannot compare this run with the one that wrote {path}: {e}") from None
    ignore = MAY_CHANGE
    if old.train.global_batch_size and old.train.global_batch_size == cfg.train.global_batch_size:
        ignore = ignore + ("data.batch_size",)  # only the micro-batch: the same images per step
    diffs = config_differences(old, cfg, ignore)
    if diffs:
        shown = "; ".join(f"{k}: {a!r} -> {b!r}" for k, a, b in diffs[:6]) + (" ..." if len(diffs) > 6 else "")
        raise RunFolderError(
            f"{os.path.dirname(path) or '.'} holds another run: {os.path.basename(path)} was written "
            f"with a different config ({len(diffs)} key(s): {shown}). To continue that run, use its config "
            f"({os.path.join(os.path.dirname(path), 'config.yaml')}) and only change keys that may change; "
            f"otherwise {_ways_out()}")


def open_run_folder(folder: str, cfg, overwrite: bool = False, dry_run: bool = False) -> FolderDecision:
    """Decide what this run does with ``folder`` (see the module doc); ``dry_run`` changes nothing on disk."""
    decision = FolderDecision(folder)
    resume = cfg.train.resume
    used = _used(folder)
    if overwrite and used:
        if dry_run:
            decision.notes.append(f"--overwrite would remove the old run's files ({', '.join(used)})")
        else:
            decision.notes.append(f"--overwrite: removed the old run's {', '.join(_remove_run_files(folder))}")
        used = []
    if not dry_run and os.path.isdir(folder):
        stale = ckpt_io.remove_stale_temporaries(folder)
        if stale:
            decision.notes.append(f"removed {len(stale)} temporary file(s) of interrupted checkpoint writes")
    if resume not in ("auto", "none", "", None):
        if not os.path.isfile(resume):
            raise ConfigError(f"train.resume: checkpoint not found: {resume}")
        ck = ckpt_io.read_checkpoint(resume, mmap=True)
        check_same_run(ck, resume, cfg)
        return _continue(decision, resume, ck, cfg)
    if not used:
        return decision
    if "final_ema.pt" not in used and not ckpt_io.list_checkpoints(folder):
        # a run that stopped before its first checkpoint: nothing to continue, but only the same run may restart
        check_same_run({"config": _read(os.path.join(folder, "config.yaml"))}, os.path.join(folder, "config.yaml"),
                       cfg)
        return decision
    if resume in ("none", "", None):
        raise RunFolderError(f"{folder} already holds a run ({', '.join(used)}) and train.resume=none would start "
                             f"another one over it: {_ways_out()}")
    path, ck = _newest_readable(folder)
    if path is None:
        raise RunFolderError(f"{folder} holds a run ({', '.join(used)}) but no readable checkpoint to continue: "
                             f"{_ways_out()}")
    check_same_run(ck, path, cfg)
    return _continue(decision, path, ck, cfg)


def _continue(decision: FolderDecision, path: str, ck: dict, cfg) -> FolderDecision:
    step = int(ck["step"])
    if step >= cfg.train.total_iters:
        raise RunFolderError(f"the run in {decision.folder} already finished: {path} is at step {step} of "
                             f"train.total_iters={cfg.train.total_iters}; raise train.total_iters to train longer, "
                             f"or {_ways_out()}")
    decision.resume_path, decision.resume_step = path, step
    return decision


# ---------------------------------------------------------------------------------------------------------------
# Lock
# ---------------------------------------------------------------------------------------------------------------
def lock_owner(folder: str) -> Optional[str]:
    """``"PID on HOST"`` of a live run holding the folder's lock, else None (no lock, or a stale one)."""
    path = os.path.join(folder, LOCK_NAME)
    try:
        with open(path) as fh:
            pid_text, _, host = fh.read().strip().partition(" ")
        pid = int(pid_text)
    except (OSError, ValueError):
        return None
    if host == socket.gethostname() and not ckpt_io.pid_alive(pid):
        return None
    return f"PID {pid} on {host}"


@contextlib.contextmanager
def run_lock(folder: str) -> Iterator[List[str]]:
    """Hold ``folder``'s lock for the block (the folder is created); yields notes (a stale lock removed)."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, LOCK_NAME)
    notes: List[str] = []
    mine = f"{os.getpid()} {socket.gethostname()}"
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            owner = lock_owner(folder)
            if owner is not None:
                raise RunFolderError(f"{folder} is in use by another training run ({owner}; lock file {path}): wait "
                                     f"for it to end or choose another train.output_dir (if that run is gone, "
                                     f"delete the lock file)") from None
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
            notes.append(f"removed a stale lock file of a run that is gone ({path})")
            continue
        with os.fdopen(fd, "w") as fh:
            fh.write(mine + "\n")
        break
    else:  # pragma: no cover - another process took the lock between our two tries
        raise RunFolderError(f"{folder} is in use by another training run (lock file {path})")
    try:
        yield notes
    finally:
        with contextlib.suppress(OSError):
            with open(path) as fh:
                ours = fh.read().strip() == mine
            if ours:
                os.remove(path)
