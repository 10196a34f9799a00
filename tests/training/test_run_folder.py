"""One run per output folder: resume only the same run, refuse a used folder, a lock against a second run, stale
temporaries cleaned, truncated checkpoints never counted; inputs checked before anything is built."""
import os
import shutil
import subprocess
import sys

import pytest
import torch

from varformer.cli import main
from varformer.config import load_config
from varformer.errors import DataError, RunFolderError
from varformer.files import MARKER_NAME
from varformer.training import checkpoint as ckpt_io
from varformer.training.run import run_training
from varformer.training.run_folder import LOCK_NAME, open_run_folder, run_lock


def _s1_config(small_runs, out_dir, *extra):
    return load_config(None, small_runs["common"] + [f"data.root={small_runs['base'] / 'clean'}",
                                                     f"train.output_dir={out_dir}", *extra])


def test_resume_auto_refuses_a_run_with_another_config(small_runs, tmp_path, capsys):
    out = tmp_path / "s1"
    shutil.copytree(small_runs["s1"], out)
    config_before = (out / "config.yaml").read_text()
    argv = ["train", "stage1", "--config", str(out / "config.yaml"), f"train.output_dir={out}",
            "train.total_iters=3", "train.lr=5e-4", "model.n_cross=2", "--no-progress"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "holds another run" in err and "train.lr: 0.001 -> 0.0005" in err and "model.n_cross: 1 -> 2" in err
    assert "--overwrite" in err and "train.output_dir=NEW" in err and "config.yaml" in err
    assert (out / "config.yaml").read_text() == config_before  # nothing written into the other run's folder
    assert [s for s, _ in ckpt_io.list_checkpoints(str(out))] == [1]


def test_resume_auto_continues_the_same_run_and_says_from_which_step(small_runs, tmp_path, capsys):
    out = tmp_path / "s1"
    shutil.copytree(small_runs["s1"], out)
    (out / "ckpt_00000002.pt.tmp.999999").write_bytes(b"PK\x03\x04 an interrupted write")  # PID 999999: gone
    res = run_training("stage1", _s1_config(small_runs, out, "train.total_iters=2"), progress=False, print_config=False)
    assert res.status == "finished" and res.step == 2
    err = capsys.readouterr().err
    assert f"resuming {out} from {out / 'ckpt_00000001.pt'} at step 1" in err
    assert "removed 1 temporary file(s)" in err and not list(out.glob("*.tmp.*"))
    ck = torch.load(out / "ckpt_00000002.pt", weights_only=True)  # RNG states as tensors: no pickle needed
    assert ck["weights_finite"] is True and ck["step"] == 2 and isinstance(ck["rng"][0]["numpy"]["state"],
                                                                           torch.Tensor)
    assert not (out / LOCK_NAME).exists()
    # the run is done: the same command again refuses rather than "resuming" at its last step
    with pytest.raises(RunFolderError, match="already finished: .* at step 2 of train.total_iters=2"):
        run_training("stage1", _s1_config(small_runs, out, "train.total_iters=2"), progress=False)


def test_a_used_folder_needs_overwrite(small_runs, tmp_path):
    out = tmp_path / "s1"
    shutil.copytree(small_runs["s1"], out)
    cfg = _s1_config(small_runs, out, "train.resume=none")
    with pytest.raises(RunFolderError, match="already holds a run .*train.resume=none.*--overwrite"):
        open_run_folder(str(out), cfg)
    plan = open_run_folder(str(out), cfg, overwrite=True, dry_run=True)
    assert "would remove" in plan.notes[0] and (out / "final_ema.pt").exists()  # a dry run changes nothing
    decision = open_run_folder(str(out), cfg, overwrite=True)
    assert decision.resume_path is None and "removed the old run's" in decision.notes[0]
    assert os.listdir(out) == [MARKER_NAME]  # the folder stays marked as a run folder


def test_a_second_run_into_a_locked_folder_stops(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / LOCK_NAME).write_text(f"{sleeper.pid} {os.uname().nodename}\n")
        with pytest.raises(RunFolderError, match=f"in use by another training run \\(PID {sleeper.pid}"):
            with run_lock(str(tmp_path)):
                pass
    finally:
        sleeper.kill()
        sleeper.wait()
    with run_lock(str(tmp_path)) as notes:  # its process is gone: a stale lock, removed
        assert "stale lock" in notes[0]
        assert (tmp_path / LOCK_NAME).read_text().split()[0] == str(os.getpid())
    assert not (tmp_path / LOCK_NAME).exists()


def test_truncated_checkpoints_do_not_count_toward_keep_last(tmp_path):
    for step in (1, 2, 3):
        ckpt_io.atomic_torch_save({"step": step, "model": {}}, str(tmp_path / ckpt_io.checkpoint_name(step)))
    (tmp_path / ckpt_io.checkpoint_name(4)).write_bytes(b"PK\x03\x04 cut short")
    assert ckpt_io.prune_checkpoints(str(tmp_path), keep_last=3) == []  # 1, 2, 3 are the last three good ones
    ckpt_io.atomic_torch_save({"step": 5, "model": {}}, str(tmp_path / ckpt_io.checkpoint_name(5)))
    assert ckpt_io.prune_checkpoints(str(tmp_path), keep_last=3) == [str(tmp_path / ckpt_io.checkpoint_name(1))]


def test_inputs_are_checked_before_the_model_is_built(small_runs, tmp_path, monkeypatch, capsys):
    def no_model(*a, **k):
        raise AssertionError("the model was built before the inputs were checked")

    monkeypatch.setattr("varformer.model.task.build_task", no_model)
    out = tmp_path / "s1"
    shutil.copytree(small_runs["s1"], out)
    before = (out / "config.yaml").read_text()
    base = ["train", "stage1", "--no-progress", "--config", str(out / "config.yaml")]
    for extra, expect in ((["data.root=/nonexistent/DF2K"], "stage-1 data root not found: '/nonexistent/DF2K'"),
                          (["data.batch_size=0"], "data.batch_size must be >= 1, got 0"),
                          ([f"model.var_path={tmp_path / 'var_d2.pth'}"], "does not exist")):
        assert main(base + extra) == 2
        err = capsys.readouterr().err.strip()
        assert expect in err and len(err.splitlines()) == 1, err
    assert (out / "config.yaml").read_text() == before
    with pytest.raises(DataError, match="validation set: benchmark 'test100' needs a root folder.*eval.root"):
        run_training("stage2", load_config("configs/stage2.yaml", [f"data.root={small_runs['base'] / 'train'}",
                                                             "data.tasks=[rain]", "model.random_init_backbone=true",
                                                             "train.loss.perceptual=0"]))
