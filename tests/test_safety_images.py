"""Images in, images out (issue #26): restore decides every output name first (its count of written files is the
count on disk); a decompression bomb is skipped with a line while the other inputs go on (restore, evaluate,
data check); evaluate checks its output folder before any work and --overwrite removes the earlier results whole."""
import os

import numpy as np
import pytest
from PIL import Image

from safety_utils import bomb_png, one_line, snapshot
from varformer.cli import main
from varformer.evaluation import evaluate
from varformer.inference import identity_restorer
from varformer.restore import collect_inputs, plan_jobs, restore_paths


def _rgb(path, seed, hw=(24, 32)):
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (*hw, 3), dtype=np.uint8)).save(path)


@pytest.fixture()
def rain_root(tmp_path):
    """Rain100H with three pairs, the second one's input a decompression bomb."""
    root = tmp_path / "data"
    for i in range(3):
        _rgb(root / "test" / "Rain100H" / "target" / f"{i}.png", i)
        _rgb(root / "test" / "Rain100H" / "input" / f"{i}.png", 10 + i)
    bomb_png(root / "test" / "Rain100H" / "input" / "1.png")
    return root


def test_restore_names_never_clash_and_the_count_is_the_files_on_disk(tmp_path):
    src = tmp_path / "in"
    for i, name in enumerate(("a.jpg", "a.png", "a_jpg.png", "A_PNG.bmp")):
        _rgb(src / name, i)
    out = tmp_path / "out"
    logs = []
    rep = restore_paths([str(src)], str(out), identity_restorer("cpu"), tile=64, overlap=8, progress=False,
                        log=logs.append)
    on_disk = sorted(os.listdir(out))
    assert len(rep.written) == len(on_disk) == 4 and not rep.failed
    # unique even where letter case does not count: A_PNG.bmp keeps its plain name, so a.png gets a number
    assert on_disk == ["A_PNG.png", "a_jpg.png", "a_jpg_2.png", "a_png_2.png"]
    jobs, _ = plan_jobs(collect_inputs([str(src)]), out)
    for j in jobs:  # each output holds its own input's pixels (identity restorer)
        assert np.array_equal(np.asarray(Image.open(j.out)), np.asarray(Image.open(j.src).convert("RGB")))


def test_a_decompression_bomb_is_skipped_with_a_line_in_restore(rain_root, tmp_path, capsys):
    src = rain_root / "test" / "Rain100H" / "input"
    before = snapshot(rain_root)
    rc = main(["restore", str(src), "-o", str(tmp_path / "out"), "--weights", "identity", "--tile", "32",
               "--overlap", "4", "--no-progress", "--device", "cpu"])
    captured = capsys.readouterr()
    assert rc == 1 and "Traceback" not in captured.err
    assert "2 written, 0 skipped (output exists), 1 failed" in captured.out
    bad = [ln for ln in captured.err.splitlines() if "1.png" in ln]
    assert len(bad) == 1 and "claims 10,000,000,000 pixels" in bad[0] and bad[0].startswith("failed:")
    assert sorted(os.listdir(tmp_path / "out")) == ["0.png", "2.png"] and snapshot(rain_root) == before


def test_a_decompression_bomb_is_skipped_with_a_line_in_evaluate_and_data_check(rain_root, tmp_path, capsys):
    res = evaluate(identity_restorer("cpu"), [("rain100h", str(rain_root))], "full", progress=False, log=None)
    entry = res.summary["benchmarks"]["rain100h"]
    assert entry["images"] == 2 and any("skipped 1 pair(s)" in n and "claims 10,000,000,000" in n
                                        for n in entry["notes"])
    assert main(["data", "check", str(rain_root), "--benchmarks", "rain100h"]) == 1
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and "1.png" in captured.out


def test_evaluate_checks_its_output_before_any_work(rain_root, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("varformer.inference.load_restorer", lambda *a, **k: pytest.fail("work began"))
    (tmp_path / "results.txt").write_text("the user's")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "summary.csv").write_text("the user's too")
    before = snapshot(tmp_path)
    base = ["evaluate", "--benchmarks", "rain100h", "--root", str(rain_root), "--protocol", "full", "--no-progress"]
    for out, expect in ((tmp_path / "results.txt", "results.txt cannot be written: it is a file, not a folder"),
                        (tmp_path / "results.txt" / "sub", "is a file, not a folder"),
                        (tmp_path / "mine", "non-empty folder that varformer did not make (summary.csv")):
        for extra in ([], ["--overwrite"]):
            assert main(base + ["-o", str(out)] + extra) == 2
            assert expect in one_line(capsys.readouterr().err)
    assert snapshot(tmp_path) == before


def test_evaluate_overwrite_leaves_no_earlier_images_beside_new_results(rain_root, tmp_path):
    out = tmp_path / "eval"
    run = dict(output_dir=str(out), save_images=True, progress=False, log=None)
    evaluate(identity_restorer("cpu"), [("rain100h", str(rain_root))], "full", **run)
    os.makedirs(out / "images" / "rain100l")
    (out / "images" / "rain100l" / "old.png").write_bytes(b"an earlier run's image")
    (out / "notes.txt").write_text("the user's, kept")
    with pytest.raises(Exception, match="already has results"):
        evaluate(identity_restorer("cpu"), [("rain100h", str(rain_root))], "full", **run)
    evaluate(identity_restorer("cpu"), [("rain100h", str(rain_root))], "full", overwrite=True, **run)
    assert sorted(os.listdir(out / "images")) == ["rain100h"]  # the earlier images/<set>/ went with its results
    assert (out / "notes.txt").read_text() == "the user's, kept"
