"""A training run never touches what it did not make, and finds every bad input before it writes (issue #26): a
folder of the user's is refused (train.output_dir=. included), --overwrite removes only a marked run's files, a
failed start does not block the corrected rerun, config values that would fail at step 1 and bad weight files
stop the run before its folder exists; config errors and argument order are one line; --dry-run writes nothing."""
import os
import shutil

import pytest

from safety_utils import error_line, one_line, snapshot
from varformer.cli import main
from varformer.config import load_config
from varformer.errors import RunFolderError
from varformer.files import MARKER_NAME, folder_kind
from varformer.training.run_folder import RUN_KIND, open_run_folder


def _s1(small_runs, out, *extra):
    return load_config(None, small_runs["common"] + ["model.stage=1", f"data.root={small_runs['base'] / 'clean'}",
                                                     f"train.output_dir={out}", *extra])


def _train(small_runs, out, *extra):
    """``varformer train stage1`` of the small run into ``out`` (its config file, these overrides)."""
    return ["train", "stage1", "--config", str(small_runs["s1"] / "config.yaml"), f"train.output_dir={out}",
            *extra, "--no-progress"]


def test_a_folder_of_the_users_is_never_a_run_folder(small_runs, tmp_path, capsys, monkeypatch):
    home = tmp_path / "project"
    home.mkdir()
    (home / "config.yaml").write_text("my: own config\n")  # run-file names, not a run's
    (home / "final_ema.pt").write_bytes(b"my file")
    (home / "tb").mkdir()
    (home / "notes.txt").write_text("notes")
    (tmp_path / "a_file").write_text("x")
    before = snapshot(tmp_path)
    monkeypatch.chdir(home)
    for extra in ([], ["--overwrite"], ["--dry-run", "--no-memory"], ["--overwrite", "--dry-run", "--no-memory"]):
        assert main(_train(small_runs, ".", *extra)) == 2
        assert "non-empty folder that is not a varformer run" in one_line(capsys.readouterr().err)
    for extra in ([], ["--dry-run", "--no-memory"]):
        assert main(_train(small_runs, tmp_path / "a_file" / "run", *extra)) == 2
        assert "a_file is a file, not a folder" in one_line(capsys.readouterr().err)
    assert snapshot(tmp_path) == before


def test_overwrite_removes_only_the_marked_runs_own_files(small_runs, tmp_path):
    out = tmp_path / "s1"
    shutil.copytree(small_runs["s1"], out)
    assert folder_kind(out) == RUN_KIND
    (out / "notes.txt").write_text("the user's notes")
    (out / "tb" / "mine.txt").write_text("inside tb/: the run's folder")
    decision = open_run_folder(str(out), _s1(small_runs, out, "train.resume=none"), overwrite=True)
    assert "removed the old run's" in decision.notes[0]
    assert sorted(os.listdir(out)) == [MARKER_NAME, "notes.txt"]
    # without the marker the same files are the user's: refused, even with --overwrite
    shutil.rmtree(out)
    shutil.copytree(small_runs["s1"], out)
    os.remove(out / MARKER_NAME)
    (out / "notes.txt").write_text("the user's notes")
    before = snapshot(out)
    with pytest.raises(RunFolderError, match="not a varformer run"):
        open_run_folder(str(out), _s1(small_runs, out, "train.resume=none"), overwrite=True)
    assert snapshot(out) == before


def test_a_run_of_an_earlier_version_is_still_continued_and_then_marked(small_runs, tmp_path):
    out = tmp_path / "s1"
    shutil.copytree(small_runs["s1"], out)
    os.remove(out / MARKER_NAME)  # as runs written before the marker existed
    plan = open_run_folder(str(out), _s1(small_runs, out, "train.total_iters=2"), dry_run=True)
    assert plan.resume_step == 1 and not (out / MARKER_NAME).exists()  # a dry run writes nothing
    decision = open_run_folder(str(out), _s1(small_runs, out, "train.total_iters=2"))
    assert decision.resume_step == 1 and folder_kind(out) == RUN_KIND
    assert any("earlier version" in n for n in decision.notes)


def test_a_failed_start_does_not_block_the_corrected_rerun(small_runs, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / MARKER_NAME).write_text(f"varformer: {RUN_KIND}\n")
    shutil.copy(small_runs["s1"] / "config.yaml", out / "config.yaml")  # a start that stopped before step 1
    (out / "tb").mkdir()
    (out / "notes.txt").write_text("kept")
    fixed = _s1(small_runs, out, "train.lr=5e-4")  # another config: the corrected rerun
    decision = open_run_folder(str(out), fixed)
    assert decision.resume_path is None and "stopped before its first checkpoint" in decision.notes[0]
    assert sorted(os.listdir(out)) == [MARKER_NAME, "notes.txt"]


@pytest.mark.parametrize("config, override, expect", [
    ("demo_restorevar_stage1.yaml", "data.crop_size=100", "data.crop_size=100, but this RestoreVAR works on 128x128"),
    ("demo_restorevar_stage1.yaml", "model.patch_nums=[2,1,3,4,6,8]", "patch_nums must start at 1"),
    ("demo_restorevar_stage1.yaml", "model.patch_nums=[1,2,3,4,6,7]", "works on 112x112 inputs"),
    ("demo_stage1.yaml", "data.crop_size=100", "data.crop_size=100, but VarFormer trains on 256x256"),
])
def test_values_that_would_fail_at_step_one_stop_before_the_folder_exists(tmp_path, capsys, config, override,
                                                                          expect):
    out = tmp_path / "run"
    assert main(["train", "stage1", "--config", config, f"train.output_dir={out}", override, "--no-progress"]) == 2
    assert expect in one_line(capsys.readouterr().err) and not out.exists()


def test_a_bad_vgg19_file_stops_the_run_before_it_writes(tmp_path, capsys):
    """Weight files are located by the checks (a dry run reads none) and read when the model is built, which
    happens before the run's folder is touched."""
    (tmp_path / "vgg.pth").write_bytes(b"\x80\x02cposix\nsystem\nq\x00X\x05\x00\x00\x00echo!q\x01\x85q\x02Rq\x03.")
    out = tmp_path / "run"
    assert main(["train", "stage2", "--config", "demo_stage2.yaml", f"train.output_dir={out}",
                 "train.loss.perceptual=1", f"train.loss.vgg_path={tmp_path / 'vgg.pth'}", "--no-progress"]) == 2
    # the model was built (announced) and its VGG19 file read before anything was written: no folder left
    assert "vgg.pth holds objects that torch.load(weights_only=True) refuses" in error_line(capsys.readouterr().err)
    assert not out.exists()


def test_config_errors_and_overrides_after_flags(small_runs, tmp_path, capsys):
    (tmp_path / "bad.yaml").write_text("train: {lr: [1, 2\n")
    (tmp_path / "interp.yaml").write_text("train:\n  output_dir: ${nope}\n")
    for cfg, expect in (("bad.yaml", "bad.yaml: not valid YAML"),
                        ("interp.yaml", "interp.yaml: train.output_dir: Interpolation key 'nope' not found")):
        assert main(["train", "stage1", "--config", str(tmp_path / cfg), "--dry-run"]) == 2
        assert expect in one_line(capsys.readouterr().err)
    out = tmp_path / "run"
    before = snapshot(tmp_path)
    # overrides after a flag are overrides (argparse alone refuses them), and a dry run writes nothing
    argv = ["train", "stage1", "--config", str(small_runs["s1"] / "config.yaml"), "--dry-run", "--no-memory",
            f"train.output_dir={out}", "train.total_iters=7"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert f"output folder: {out}: a new run" in text and "steps: 7 (7 to go)" in text
    assert snapshot(tmp_path) == before and not out.exists()
    assert main(argv + ["train.total_iters=8"]) == 2
    assert "train.total_iters is given twice" in one_line(capsys.readouterr().err)


def test_a_dry_run_into_a_run_folder_changes_nothing(small_runs, tmp_path, capsys):
    out = tmp_path / "s1"
    shutil.copytree(small_runs["s1"], out)
    before = snapshot(out)
    assert main(_train(small_runs, out, "train.resume=none", "--overwrite", "--dry-run", "--no-memory")) == 0
    assert "--overwrite would remove the old run's files" in capsys.readouterr().out
    assert snapshot(out) == before


def test_overwrite_removes_nothing_when_the_model_cannot_be_built(small_runs, tmp_path, capsys):
    out = tmp_path / "s1"
    shutil.copytree(small_runs["s1"], out)
    before = snapshot(out)
    (tmp_path / "var.pth").write_bytes(b"\x80\x02cposix\nsystem\nq\x00X\x05\x00\x00\x00echo!q\x01\x85q\x02Rq\x03.")
    argv = _train(small_runs, out, "train.resume=none", f"model.var_path={tmp_path / 'var.pth'}", "--overwrite")
    assert main(argv) == 2
    assert "var.pth holds objects that torch.load(weights_only=True) refuses" in error_line(capsys.readouterr().err)
    assert snapshot(out) == before  # the old run is still there: it is removed only once the new one can start
