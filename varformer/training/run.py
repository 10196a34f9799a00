"""``run_training(stage, cfg)``: what ``varformer train stage1|stage2|decoder`` and the scripts call (torchrun-ready).
``model.method`` picks the method: ``varformer`` (``stages``) or ``restorevar`` (``restorevar_stages``; its
``decoder`` stage is the decoder fine-tuning, not the authors' code).

Order: the inputs are checked (``preflight``: config numbers, training data, validation set, weight files), then
the output folder is locked and its state decided (``run_folder``: a new run, or the same run continued), and
only then is ``config.yaml`` written and the model built. A bad input thus stops the run in seconds with one
line, and never leaves anything in a folder that holds another run.
"""
from __future__ import annotations

import contextlib
import sys

from omegaconf import OmegaConf

from varformer import errors
from varformer.config import METHODS, save_config, to_yaml
from varformer.errors import ConfigError, VarformerError
from varformer.training.distributed import (DistInfo, broadcast_object, cleanup_distributed, seed_everything,
                                            setup_distributed)
from varformer.training.preflight import check_run_inputs
from varformer.training.restorevar_stages import DECODER_STAGE, build_restorevar_task
from varformer.training.run_folder import FolderDecision, open_run_folder, run_lock
from varformer.training.stages import build_task
from varformer.training.trainer import FitResult, Trainer

STAGES = {"stage1": 1, "stage2": 2, "decoder": DECODER_STAGE}


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


def run_training(stage: int, cfg, progress: bool = True, print_config: bool = True,
                 overwrite: bool = False) -> FitResult:
    method = cfg.model.method
    if method not in METHODS:
        raise ConfigError(f"model.method must be one of {', '.join(METHODS)}, got {method!r}")
    if stage not in (1, 2) and not (method == "restorevar" and stage == DECODER_STAGE):
        raise ConfigError(f"stage must be 1 or 2{' or decoder' if method == 'restorevar' else ''} for {method}, "
                          f"got {stage}" + (" (the decoder stage is RestoreVAR's: model.method=restorevar)"
                                            if stage == DECODER_STAGE else ""))
    if method == "varformer":
        cfg.model.stage = stage  # the command names the stage; the config's model.stage follows it
    info = setup_distributed(cfg.train.device)
    try:
        def announce(text: str) -> None:
            if info.is_main:
                print(text, file=sys.stderr, flush=True)

        found = check_run_inputs(cfg, stage)  # before anything is built or written
        out_dir = cfg.train.output_dir
        with contextlib.ExitStack() as stack:
            if info.is_main:
                for note in stack.enter_context(run_lock(out_dir)):
                    announce(note)
            decision = _decided_on_rank0(info, lambda: open_run_folder(out_dir, cfg, overwrite))
            for note in found.notes + decision.notes:
                announce(f"note: {note}")
            if info.is_main:
                if print_config:
                    print(to_yaml(cfg), flush=True)
                announce(f"resolved config saved to {save_config(cfg, out_dir)}")
            if decision.resume_path:
                announce(f"resuming {out_dir} from {decision.resume_path} at step {decision.resume_step}")
            seed_everything(cfg.train.seed, info.rank)  # official: 114514 + rank
            task = (build_task(cfg, stage, announce) if method == "varformer"
                    else build_restorevar_task(cfg, stage, announce))
            announce(f"training data: {len(found.dataset)} samples per nominal epoch under {cfg.data.root}")
            train_cfg = OmegaConf.merge(cfg.train, {"resume": decision.resume_path or "none"})
            trainer = stack.enter_context(Trainer(task, found.dataset, train_cfg, cfg.data, info, out_dir,
                                                  config_yaml=to_yaml(cfg), progress=progress))
            for note in trainer.batch.notes(stage, method == "varformer" and cfg.model.vae_ch == 160):
                announce(f"note: {note}")
            result = trainer.fit()
        label = f"stage {stage}" if method == "varformer" else f"RestoreVAR stage {stage}"
        announce(f"{label}: {result.status} at step {result.step}; last checkpoint {result.checkpoint}")
        return result
    finally:
        cleanup_distributed()
