"""varformer.files' ownership rules (docs/safety.md): the folder marker, which folders may be written into or
emptied, output files checked before any work, a lock file that appears with its content."""
import os

import pytest
import torch

from safety_utils import snapshot
from varformer.errors import CheckpointMismatchError, OutputError
from varformer.files import (MARKER_NAME, check_output_file, check_safetensors, claim_folder, create_exclusive,
                             folder_kind, mark_folder, read_torch_file, remove_owned, save_safetensors_atomic,
                             write_text_atomic)


def test_only_a_marked_folder_is_emptied_and_only_of_what_is_named(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("the user's")
    (mine / "tb").mkdir()
    (mine / "tb" / "events").write_text("x")
    before = snapshot(mine)
    with pytest.raises(OutputError, match="not marked as a varformer training run"):
        remove_owned(mine, "training run", ["tb"])
    assert snapshot(mine) == before
    mark_folder(mine, "training run")
    assert folder_kind(mine) == "training run" and "varformer" in (mine / MARKER_NAME).read_text()
    with pytest.raises(OutputError, match="says training run"):  # another kind's marker: nothing removed
        remove_owned(mine, "demo set", ["tb"])
    assert remove_owned(mine, "training run", ["tb", "config.yaml"]) == ["tb"]  # absent names are skipped
    assert sorted(os.listdir(mine)) == [MARKER_NAME, "notes.txt"]  # what it did not name stays
    with pytest.raises(ValueError):
        remove_owned(mine, "training run", ["../elsewhere"])


def test_claim_folder_refuses_what_the_program_did_not_make(tmp_path):
    assert claim_folder(tmp_path / "new", "demo set", "cache") == "new"
    (tmp_path / "empty").mkdir()
    assert claim_folder(tmp_path / "empty", "demo set", "cache") == "empty"
    user = tmp_path / "Pictures"
    user.mkdir()
    (user / "holiday.jpg").write_bytes(b"\xff\xd8 a photo")
    with pytest.raises(OutputError) as e:
        claim_folder(user, "demo set", "the demo set folder")
    assert "non-empty folder that varformer did not make (holiday.jpg" in str(e.value)
    assert claim_folder(user, "demo set", "cache", recognized=lambda f: True) == "recognized"
    mark_folder(tmp_path / "run", "training run")
    with pytest.raises(OutputError, match="holds a varformer training run, not a demo set"):
        claim_folder(tmp_path / "run", "demo set", "cache")
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(OutputError, match="a_file/sub cannot be written: .*a_file is a file, not a folder"):
        claim_folder(tmp_path / "a_file" / "sub", "demo set", "cache")
    assert (tmp_path / "a_file").read_text() == "x"


def test_an_output_is_never_an_input_and_replaces_a_file_only_when_asked(tmp_path):
    src = tmp_path / "model.pth"
    src.write_bytes(b"weights")
    link = tmp_path / "link.pth"
    os.symlink(src, link)
    hard = tmp_path / "hard.pth"
    os.link(src, hard)
    for out in (src, link, hard, tmp_path / "." / "model.pth"):  # the same file under other names, too
        with pytest.raises(OutputError, match="is also an input"):
            check_output_file(out, [str(src)], overwrite=True)
    other = tmp_path / "other.safetensors"
    other.write_text("unrelated")
    with pytest.raises(OutputError, match=r"already exists \(it is text\); pass --overwrite"):
        check_output_file(other, [str(src)], describe=lambda p: "it is text")
    assert "is replaced (--overwrite)" in check_output_file(other, [str(src)], overwrite=True)
    assert check_output_file(tmp_path / "new.safetensors", [str(src)]) is None
    with pytest.raises(OutputError, match="is a folder"):
        check_output_file(tmp_path, [])
    with pytest.raises(OutputError, match="its folder is a file"):
        check_output_file(src / "x.pt", [])
    assert src.read_bytes() == b"weights" and other.read_text() == "unrelated"


def test_create_exclusive_makes_the_file_whole_or_not_at_all(tmp_path):
    lock = tmp_path / "lock"
    assert create_exclusive(lock, "123 host 456\n")
    assert not create_exclusive(lock, "999 host 1\n")  # exists: not replaced
    assert lock.read_text() == "123 host 456\n" and os.listdir(tmp_path) == ["lock"]  # no temporary left


def test_a_cut_short_safetensors_file_is_recognised(tmp_path):
    path = tmp_path / "m.safetensors"
    save_safetensors_atomic({"w": torch.ones(64)}, path)
    check_safetensors(path)
    data = path.read_bytes()
    path.write_bytes(data[:-10])
    with pytest.raises(CheckpointMismatchError, match="truncated or corrupt: its header describes"):
        check_safetensors(path)


def test_a_pickle_with_code_is_one_line_naming_what_it_would_call(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo never",))

    torch.save({"x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointMismatchError) as e:
        read_torch_file(tmp_path / "evil.pt")
    msg = str(e.value)
    assert "\n" not in msg and "system" in msg and "Weights only load failed" not in msg


def test_text_is_written_whole_and_as_given(tmp_path):
    write_text_atomic(tmp_path / "a" / "rows.csv", "a,b\r\n1,2\r\n")
    assert (tmp_path / "a" / "rows.csv").read_bytes() == b"a,b\r\n1,2\r\n"
    assert os.listdir(tmp_path / "a") == ["rows.csv"]
