"""``varformer convert`` checks its outputs before it reads anything, for every converter alike (issue #26): an
input is never its own output, an existing file is replaced only with --overwrite, restorevar-to-official never
replaces released files in -o silently; each refusal is one line and every file stays byte-identical."""
import pytest
import torch

from safety_utils import one_line, snapshot
from varformer.cli import main
from varformer.restorevar import save_restorevar


@pytest.fixture()
def files(tmp_path, model):
    ours = tmp_path / "restorevar.safetensors"
    save_restorevar(ours, model)
    assert main(["convert", "restorevar-to-official", str(ours), "-o", str(tmp_path / "released")]) == 0
    official = tmp_path / "official.pth"
    torch.save({"params_ema": {"conv_first.weight": torch.zeros(2, 3, 3, 3)}}, official)  # a BasicSR-looking file
    (tmp_path / "notes.txt").write_text("the user's notes")
    return tmp_path


def _refused(argv, capsys, folder):
    before = snapshot(folder)
    assert main(argv) == 2
    line = one_line(capsys.readouterr().err)
    assert snapshot(folder) == before
    return line


def test_an_input_is_never_its_own_output(files, capsys):
    for argv in (["convert", "official", str(files / "official.pth"), "-o", str(files / "official.pth")],
                 ["convert", "restorevar", str(files / "released" / "restorevar.pth"), "--vae",
                  str(files / "released" / "vae_restorevar.ckpt"), "-o",
                  str(files / "released" / "vae_restorevar.ckpt"), "--overwrite"]):
        assert "is also an input" in _refused(argv, capsys, files)


def test_an_existing_file_is_replaced_only_with_overwrite(files, capsys):
    released = files / "released"
    base = ["convert", "restorevar", str(released / "restorevar.pth"), "--vae", str(released / "vae_restorevar.ckpt")]
    line = _refused(base + ["-o", str(files / "notes.txt")], capsys, files)
    assert "notes.txt already exists (not a weights file); pass --overwrite" in line
    line = _refused(base + ["-o", str(files / "restorevar.safetensors")], capsys, files)
    assert "a RestoreVAR (refiner depth 1" in line and "model file of this project" in line
    assert "cannot be written: its folder is a file" in _refused(base + ["-o", str(files / "notes.txt" / "m.pt")],
                                                                 capsys, files)
    assert main(base + ["-o", str(files / "notes.txt"), "--overwrite"]) == 0
    assert "notes.txt (not a weights file) is replaced (--overwrite)" in capsys.readouterr().out


def test_restorevar_to_official_never_replaces_released_files_silently(files, capsys):
    argv = ["convert", "restorevar-to-official", str(files / "restorevar.safetensors"), "-o", str(files / "released")]
    line = _refused(argv, capsys, files)
    assert "released/restorevar.pth already exists (RestoreVAR's released restorevar.pth" in line
    assert "folder" in _refused(argv[:-1] + [str(files / "notes.txt")], capsys, files)  # -o a file
    assert main(argv + ["--overwrite"]) == 0
    assert "is replaced (--overwrite)" in capsys.readouterr().out


def test_an_unreadable_source_is_one_line(files, capsys):
    (files / "evil.pth").write_bytes(b"\x80\x02cposix\nsystem\nq\x00X\x05\x00\x00\x00echo!q\x01\x85q\x02Rq\x03.")
    line = _refused(["convert", "restorevar-to-official", str(files / "evil.pth"), "-o", str(files / "out")], capsys,
                    files)
    assert "refuses to unpickle" in line and not (files / "out").exists()
