"""``run_training(stage, cfg)``: what ``varformer train STAGE`` and the scripts call (torchrun-ready). The config's
``method`` names the method (``varformer.methods.registry``); ``stage`` is one of its ``StageSpec`` names, whose
``build_task`` gives the ``TrainTask`` the shared ``Trainer`` runs.

Order: the inputs are checked (``preflight``: config numbers, training data, validation set, weight files located),
then the output folder is locked and its state decided (``run_folder``: a new run, or the same run continued;
a refusal stops here), then the model is built (its weight files read), and only then is the decision carried
out (an old run removed with ``--overwrite``, the folder marked as a run's) and ``config.yaml`` written. A bad
input thus stops the run with one line and leaves the folder as it was: nothing of another run or of the user's
is touched, and a new folder is not left behind.
"""
from __future__ import annotations

import contextlib
import sys

from omegaconf import OmegaConf

from varformer import errors
from varformer.config import method_of, save_config, to_yaml
from varformer.errors import VarformerError
from varformer.training.distributed import (DistInfo, broadcast_object, cleanup_distributed, seed_everything,
                                            setup_distributed)
from varformer.training.preflight import check_run_inputs
from varformer.training.run_folder import FolderDecision, check_ownership, open_run_folder, run_lock
from varformer.training.trainer import FitResult, Trainer


def _decided_on_rank0(info: DistInfo, decide) -> FolderDecision:
    """Rank 0 decides (under the lock); every rank gets the decision, or raises the same one-line error."""
    outcome = None
    if info.is_main:
        try:
            outcome = ("ok", decide())
        except VarformerError as e:
            outcome = ("error", type(e).__name__, str(e))
            if not info.distributed:
                raise
            broadcast_object(info, outcome)
            raise
    outcome = broadcast_object(info, outcome)
    if outcome[0] == "error":
        raise getattr(errors, outcome[1], errors.RunFolderError)(outcome[2])
    return outcome[1]


def run_training(stage: str, cfg, progress: bool = True, print_config: bool = True,
                 overwrite: bool = False) -> FitResult:
    """Train stage ``stage`` (its name, e.g. ``stage2``) of the config's method."""
    spec = method_of(cfg)
    stage_spec = spec.stage(stage)
    stage_spec.configure(cfg)
    info = setup_distributed(cfg.train.device)
    try:
        def announce(text: str) -> None:
            if info.is_main:
                print(text, file=sys.stderr, flush=True)

        found = check_run_inputs(cfg, stage_spec)  # before anything is built or written
        out_dir = cfg.train.output_dir
        check_ownership(out_dir)  # a folder of the user's is refused before the lock is put into it
        with contextlib.ExitStack() as stack:
            if info.is_main:
                for note in stack.enter_context(run_lock(out_dir)):
                    announce(note)
            # decided (a refusal raised) before the model is built, carried out after: a weight file that fails
            # to load stops the run with the folder as it was
            _decided_on_rank0(info, lambda: open_run_folder(out_dir, cfg, overwrite, dry_run=True))
            seed_everything(cfg.train.seed, info.rank)  # official: 114514 + rank
            task = stage_spec.build_task(cfg, announce)
            decision = _decided_on_rank0(info, lambda: open_run_folder(out_dir, cfg, overwrite))
            for note in found.notes + decision.notes:
                announce(f"note: {note}")
            if info.is_main:
                if print_config:
                    print(to_yaml(cfg), flush=True)
                announce(f"resolved config saved to {save_config(cfg, out_dir)}")
            if decision.resume_path:
                announce(f"resuming {out_dir} from {decision.resume_path} at step {decision.resume_step}")
            announce(f"training data: {len(found.dataset)} samples per nominal epoch under {cfg.data.root}")
            train_cfg = OmegaConf.merge(cfg.train, {"resume": decision.resume_path or "none"})
            trainer = stack.enter_context(Trainer(task, found.dataset, train_cfg, cfg.data, info, out_dir,
                                                  config_yaml=to_yaml(cfg), progress=progress))
            for note in trainer.batch.notes(stage_spec, cfg.train.lr, stage_spec.released_size(cfg)):
                announce(f"note: {note}")
            result = trainer.fit()
        announce(f"{spec.title} {stage}: {result.status} at step {result.step}; last checkpoint {result.checkpoint}")
        return result
    finally:
        cleanup_distributed()
