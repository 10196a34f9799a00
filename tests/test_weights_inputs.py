"""Weights files as users hand them to restore / evaluate / convert: a training checkpoint restores with its EMA
weights, every other file gets one line saying what it is (issue: bad inputs tried as a new user would)."""
import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from varformer.cli import main
from varformer.errors import CheckpointMismatchError, WeightsNotFoundError
from varformer.inference import load_restorer
from varformer.methods.registry import inspect_weights


def _one_line_error(capsys, argv, expect):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert expect in err, err
    return err


def test_training_checkpoint_restores_with_its_ema_weights(small_runs, tmp_path, capsys):
    ckpt, final = small_runs["s2"] / "ckpt_00000001.pt", small_runs["s2"] / "final_ema.pt"
    assert inspect_weights(ckpt).kind == "training" and inspect_weights(ckpt).step == 1
    from_ckpt, from_final = load_restorer(str(ckpt), "cpu", "fp32"), load_restorer(str(final), "cpu", "fp32")
    ours, theirs = from_ckpt.model.state_dict(), from_final.model.state_dict()
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)  # EMA weights + the backbone from its files
    # the frozen backbone is not in the checkpoint: it comes from the files its config names
    assert not any(k.startswith("vae.encoder.") for k in torch.load(ckpt, weights_only=True)["model"])
    (tmp_path / "in").mkdir()
    Image.fromarray(np.zeros((40, 30, 3), np.uint8)).save(tmp_path / "in" / "a.png")
    assert main(["restore", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--weights", str(ckpt),
                 "--precision", "fp32", "--no-progress"]) == 0
    assert (tmp_path / "out" / "a.png").is_file()


def test_training_checkpoint_without_its_backbone_files_says_which_file_to_use(small_runs, tmp_path):
    vae = small_runs["base"] / "vae.pth"
    moved = tmp_path / "vae.pth"
    shutil.move(vae, moved)
    try:
        with pytest.raises(WeightsNotFoundError) as e:
            load_restorer(str(small_runs["s2"] / "ckpt_00000001.pt"), "cpu", "fp32")
    finally:
        shutil.move(moved, vae)
    msg = str(e.value)
    assert "training checkpoint" in msg and "final_ema.pt" in msg and "\n" not in msg


def test_stage1_files_are_not_restorers(small_runs, tmp_path, capsys):
    img = tmp_path / "a.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(img)
    for f in ("final_ema.pt", "ckpt_00000001.pt"):
        err = _one_line_error(capsys, ["restore", str(img), "-o", str(tmp_path / "o"), "--weights",
                                       str(small_runs["s1"] / f)], "it is not a restorer")
        assert "model.stage1_weights=" in err
    _one_line_error(capsys, ["evaluate", "--weights", str(small_runs["s1"] / "final_ema.pt"), "--benchmarks",
                             "demo", "-o", str(tmp_path / "e")], "not a restorer")


def test_unreadable_weights_get_one_line(tmp_path, capsys):
    good = tmp_path / "good.pt"
    torch.save({"w": torch.ones(1000)}, good)
    data = good.read_bytes()
    (tmp_path / "truncated.pt").write_bytes(data[: len(data) // 2])
    (tmp_path / "random.pth").write_bytes(np.random.default_rng(0).integers(0, 256, 4096, np.uint8).tobytes()
                                          .replace(b"\x80", b"\x81"))
    img = tmp_path / "a.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(img)
    for name, expect in (("truncated.pt", "is truncated"), ("random.pth", "is not a torch checkpoint")):
        for argv in (["restore", str(img), "-o", str(tmp_path / "o"), "--weights", str(tmp_path / name)],
                     ["evaluate", "--weights", str(tmp_path / name), "--benchmarks", "demo",
                      "-o", str(tmp_path / "e")],
                     ["convert", "official", str(tmp_path / name), "-o", str(tmp_path / "x.pt")]):
            _one_line_error(capsys, argv, expect)
    assert not (tmp_path / "o").exists() or not list((tmp_path / "o").iterdir())


def test_a_pickle_with_code_is_never_run(tmp_path, monkeypatch):
    """model.stage1_weights / train.resume / restore read with weights_only=True: an embedded call is refused."""
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    bad = tmp_path / "crafted.pt"
    torch.save({"step": 1, "model": {}, "ema": {}, "x": Payload()}, bad)
    from varformer.model.task import read_stage1
    from varformer.training.checkpoint import read_checkpoint
    for load in (lambda: read_stage1(str(bad)), lambda: read_checkpoint(str(bad)),
                 lambda: load_restorer(str(bad), "cpu", "fp32")):
        with pytest.raises(CheckpointMismatchError, match="refuses to unpickle"):
            load()
    assert not marker.exists()


def test_convert_says_what_needs_no_conversion(small_runs, tmp_path, capsys):
    base = small_runs["base"]
    cases = {base / "var.pth": "a VAR transformer file (depth 2", base / "vae.pth": "a VQVAE tokenizer file",
             small_runs["s2"] / "final_ema.pt": "model file of this project",
             small_runs["s2"] / "ckpt_00000001.pt": "training checkpoint"}
    for path, what in cases.items():
        err = _one_line_error(capsys, ["convert", "official", str(path), "-o", str(tmp_path / "out.pt")], what)
        assert "needs no conversion" in err and "--key" not in err
    assert not (tmp_path / "out.pt").exists()


def test_evaluate_size_mismatch_in_a_loader_worker_is_one_line(tmp_path, capsys):
    rng = np.random.default_rng(0)
    for sub, hw in (("input", (30, 44)), ("target", (32, 44))):
        os.makedirs(tmp_path / "Test100" / sub)
        Image.fromarray(rng.integers(0, 256, (*hw, 3), dtype=np.uint8)).save(tmp_path / "Test100" / sub / "1.png")
    _one_line_error(capsys, ["evaluate", "--benchmarks", "test100", "--root", str(tmp_path), "--protocol", "full",
                             "--workers", "1", "--no-progress", "-o", str(tmp_path / "out")], "size mismatch")


def test_data_check_of_a_file_says_it_is_a_file(tmp_path, capsys):
    f = tmp_path / "x.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(f)
    _one_line_error(capsys, ["data", "check", str(f)], "is a file, not a folder")
