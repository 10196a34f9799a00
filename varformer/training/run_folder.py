"""A training run's output folder: one run per folder, continued only by the same run, and nothing else touched.

- **Ownership**: a run marks its folder (``varformer.files.MARKER_NAME``, kind ``training run``) when it starts
  writing. A run goes only into a new or empty folder, a marked run folder, or an unmarked one that holds nothing
  but a run of an earlier version (``RUN_FILES`` and checkpoints, its ``config.yaml`` one of ours); a non-empty
  folder of the user's (``train.output_dir=.``) is refused in one line, and nothing in it is touched.
- **Lock**: ``.varformer.lock`` (PID, host and the process's start time) while a run writes into the folder,
  created atomically with that content (``varformer.files.create_exclusive``); a second run into it stops with
  one line. A lock is stale only when its owner is provably gone (same host: no such process, or a process that
  started at another time); stale locks are removed one remover at a time (``flock`` on the folder).
- **State** (``open_run_folder``): an empty or new folder starts a run. A folder that holds a trained run
  (checkpoints, ``final_ema.*``) is continued by ``train.resume=auto`` only when the newest readable checkpoint was
  written by a run whose resolved config matches this one, except for the keys in ``MAY_CHANGE`` (how long, how
  often to log/save/validate, where and on what the run executes); otherwise the error names the differing keys
  and the ways out. ``train.resume=none`` into a used folder is refused; ``--overwrite`` removes the old run's
  files first (and only those, and only from a marked folder). A run that stopped before its first checkpoint
  (a failed start: only ``config.yaml`` and ``tb/``) has nothing to continue: the next run replaces it.
- Interrupted checkpoint writes (``.ckpt_*.pt.PID.tmp``, before ``ckpt_*.pt.tmp.PID``) of dead processes are
  removed under the lock.

The config comparison reads only ``step`` and ``config`` of the checkpoint (memory-mapped), not its tensors.
"""
from __future__ import annotations

import contextlib
import os
import re
import socket
import warnings
from dataclasses import dataclass, field
from typing import Iterator, List, Optional, Tuple

from varformer.config import config_differences, config_from_yaml
from varformer.errors import CheckpointMismatchError, ConfigError, OutputError, RunFolderError
from varformer.files import (TMP_SUFFIX, check_writable_folder, create_exclusive, folder_entries, folder_kind,
                             make_folder, mark_folder, remove_owned)
from varformer.training import checkpoint as ckpt_io

try:  # POSIX: serialises the removal of stale locks
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

LOCK_NAME = ".varformer.lock"
RUN_KIND = "training run"           # the marker's kind (varformer.files.mark_folder)
RUN_FILES = ("config.yaml", "final_ema.pt", "final_ema.ckpt", "final_ema.safetensors", "tb")
TRAINED = ("final_ema.pt", "final_ema.ckpt", "final_ema.safetensors")   # what a run that trained leaves
# a run's own temporaries: interrupted checkpoint writes, atomic writes of config.yaml and exports
_TEMPORARY = re.compile(r"^(ckpt_\d{8}\.pt\.tmp\.\d+|\..+\.\d+" + re.escape(TMP_SUFFIX) + r")$")
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
    """What in ``folder`` belongs to a run (checkpoints, config.yaml, final_ema.*, tb/)."""
    if not os.path.isdir(folder):
        return []
    n = len(ckpt_io.list_checkpoints(folder))
    found = [f"{n} checkpoint(s)"] if n else []
    return found + [f for f in RUN_FILES if os.path.exists(os.path.join(folder, f))]


def _ways_out() -> str:
    return ("pass --overwrite to replace the old run, or start a new one in another folder "
            "(train.output_dir=NEW train.resume=none)")


def _is_run_entry(name: str) -> bool:
    return (name in RUN_FILES or name == LOCK_NAME or bool(ckpt_io.CKPT_PATTERN.match(name))
            or bool(_TEMPORARY.match(name)))


def _earlier_run(folder: str) -> bool:
    """An unmarked folder that holds only a run of an earlier version (before markers): run files alone, and its
    ``config.yaml`` (if any) a config of ours."""
    if not all(_is_run_entry(n) for n in folder_entries(folder)):
        return False
    text = _read(os.path.join(folder, "config.yaml"))
    if text is None:
        return bool(ckpt_io.list_checkpoints(folder)) or any(os.path.exists(os.path.join(folder, f)) for f in TRAINED)
    try:
        config_from_yaml(text, "config.yaml")
    except ConfigError:
        return False
    return True


def check_ownership(folder: str) -> str:
    """``new``, ``empty``, ``marked`` or ``earlier`` (an unmarked run of an earlier version); anything else -- a
    file, a folder another command of this program marked, a non-empty folder of the user's -- is refused in one
    line before anything is written. The run's own lock (held while this is asked) does not count."""
    try:
        check_writable_folder(folder, "train.output_dir")
    except OutputError as e:
        raise RunFolderError(str(e)) from None
    if not os.path.exists(folder):
        return "new"
    kind = folder_kind(folder)
    if kind == RUN_KIND:
        return "marked"
    if kind is not None:
        raise RunFolderError(f"train.output_dir {folder} holds a varformer {kind}, not a training run: choose "
                             f"another train.output_dir")
    entries = [n for n in folder_entries(folder) if n != LOCK_NAME and not _TEMPORARY.match(n)]
    if not entries:
        return "empty"
    if _earlier_run(folder):
        return "earlier"
    shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
    raise RunFolderError(f"train.output_dir {folder} is a non-empty folder that is not a varformer run ({shown}): "
                         f"a run writes only into a new or empty folder or its own run folder, and never replaces "
                         f"or removes what it did not make; choose another train.output_dir")


def _remove_run_files(folder: str, names: Optional[List[str]] = None) -> List[str]:
    """The old run's files (checkpoints and ``RUN_FILES``; or only ``names``), from a folder marked as a run."""
    mark_folder(folder, RUN_KIND)  # an earlier version's run (check_ownership recognised it) is marked first
    if names is None:
        names = [os.path.basename(p) for _, p in ckpt_io.list_checkpoints(folder)] + list(RUN_FILES)
    return remove_owned(folder, RUN_KIND, names)


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
    """Decide what this run does with ``folder`` (see the module doc) and, unless ``dry_run`` (which changes
    nothing on disk), mark it as a run folder."""
    decision = FolderDecision(folder)
    ownership = check_ownership(folder)
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
        return _marked(_continue(decision, resume, ck, cfg), dry_run)
    if used and not ckpt_io.list_checkpoints(folder) and not any(f in used for f in TRAINED):
        # a run that stopped before its first checkpoint (a failed start): nothing to continue or to lose
        left = [n for n in ("config.yaml", "tb") if n in used]
        verb = "would be replaced" if dry_run else "replaced"
        decision.notes.append(f"the previous start in {folder} stopped before its first checkpoint: its "
                              f"{' and '.join(left)} {verb}")
        if not dry_run:
            _remove_run_files(folder, left)
        used = []
    if not used:
        return _marked(decision, dry_run)
    if resume in ("none", "", None):
        raise RunFolderError(f"{folder} already holds a run ({', '.join(used)}) and train.resume=none would start "
                             f"another one over it: {_ways_out()}")
    path, ck = _newest_readable(folder)
    if path is None:
        raise RunFolderError(f"{folder} holds a run ({', '.join(used)}) but no readable checkpoint to continue: "
                             f"{_ways_out()}")
    check_same_run(ck, path, cfg)
    decision = _continue(decision, path, ck, cfg)
    if ownership == "earlier":
        decision.notes.append(f"{folder} holds a run of an earlier version: marked as a run folder")
    return _marked(decision, dry_run)


def _marked(decision: FolderDecision, dry_run: bool) -> FolderDecision:
    if not dry_run:
        mark_folder(decision.folder, RUN_KIND)
    return decision


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
def _process_start(pid: int) -> Optional[str]:
    """When process ``pid`` started (Linux: clock ticks since boot, /proc/PID/stat field 22); None elsewhere."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _owner_line() -> str:
    return f"{os.getpid()} {socket.gethostname()} {_process_start(os.getpid()) or '-'}\n"


def _lock_state(path: str) -> Tuple[str, str]:
    """(``absent`` | ``held`` | ``stale``, who): stale only when the owner is provably gone -- on this host, its
    PID is no process, or a process that started at another time than the owner (the PID was reused)."""
    try:
        with open(path) as fh:
            text = fh.read()
    except FileNotFoundError:
        return "absent", ""
    except OSError as e:
        return "held", f"an unknown process (lock file unreadable: {e.strerror or e})"
    parts = text.split()
    if len(parts) < 2 or not parts[0].isdigit():
        return "held", "an unknown process (lock file without an owner: being written, or from an older version)"
    pid, host, start = int(parts[0]), parts[1], (parts[2] if len(parts) > 2 and parts[2] != "-" else None)
    who = f"PID {pid} on {host}"
    if host != socket.gethostname():
        return "held", who
    if not ckpt_io.pid_alive(pid):
        return "stale", who
    now = _process_start(pid) if start is not None else None
    return ("stale" if now is not None and now != start else "held"), who


def lock_owner(folder: str) -> Optional[str]:
    """Who holds the folder's lock ("PID 123 on HOST"), else None (no lock, or one whose owner is provably gone)."""
    state, who = _lock_state(os.path.join(folder, LOCK_NAME))
    return who if state == "held" else None


@contextlib.contextmanager
def _removers_one_at_a_time(folder: str) -> Iterator[None]:
    """An exclusive ``flock`` on the folder while a stale lock is checked and removed: two starters that both
    found it stale would otherwise remove it twice, the second time the first one's fresh lock."""
    fd = None
    try:
        fd = os.open(folder, os.O_RDONLY)
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
    except OSError:  # no flock here (some network file systems): the stale check below still re-reads the lock
        pass
    try:
        yield
    finally:
        if fd is not None:
            os.close(fd)  # releases the flock


def _in_use(folder: str, path: str, who: str) -> RunFolderError:
    return RunFolderError(f"{folder} is in use by another training run ({who}; lock file {path}): wait for it to "
                          f"end or choose another train.output_dir (if that run is gone, delete the lock file)")


@contextlib.contextmanager
def run_lock(folder: str) -> Iterator[List[str]]:
    """Hold ``folder``'s lock for the block (the folder is created); yields notes (a stale lock removed)."""
    created = []  # the folders made here, removed again if the run leaves them empty (a start that failed)
    probe = os.path.abspath(folder)
    while not os.path.lexists(probe) and os.path.dirname(probe) != probe:
        created.append(probe)
        probe = os.path.dirname(probe)
    try:
        check_writable_folder(folder, "train.output_dir")
        make_folder(folder, "train.output_dir")
    except OutputError as e:
        raise RunFolderError(str(e)) from None
    path = os.path.join(folder, LOCK_NAME)
    notes: List[str] = []
    mine = _owner_line()
    for _ in range(3):
        if create_exclusive(path, mine):
            break
        with _removers_one_at_a_time(folder):
            state, who = _lock_state(path)  # read again under the flock: another remover may have been first
            if state == "held":
                raise _in_use(folder, path, who)
            if state == "stale":
                with contextlib.suppress(FileNotFoundError):
                    os.remove(path)
                notes.append(f"removed a stale lock file of a run that is gone ({who}; {path})")
    else:  # pragma: no cover - the lock changed hands three times while we looked
        raise _in_use(folder, path, "another process starting at the same time")
    try:
        yield notes
    finally:
        with contextlib.suppress(OSError):
            with open(path) as fh:
                ours = fh.read() == mine
            if ours:
                os.remove(path)
        for made in created:  # innermost first; a folder with anything in it stays
            try:
                os.rmdir(made)
            except OSError:
                break
