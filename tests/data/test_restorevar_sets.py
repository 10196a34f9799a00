"""RestoreVAR's data: the authors' JSON lists (reading, errors, the cap, grouping, saved names) and the sets its
two tables use in the catalogue (Snow100K, the Rain13K test sets together, REVIDE and LOL-Blur video folders,
CDD, UDC)."""
import json
import os

import pytest

from data_helpers import make_pairs, write_rgb
from varformer.cli import main
from varformer.data.benchmark_data import benchmark_dataset
from varformer.data.catalog import find_all, get_benchmark
from varformer.data.json_list import ListEntry, list_datasets, read_list, saved_name
from varformer.errors import DataError
from varformer.restorevar.schedule import release_schedule, schedule_for_list


def _entry(lq, gt, deg, ds):
    return {"image_path": lq, "target_path": gt, "degradation": deg, "dataset": ds}


def _write_list(path, entries):
    with open(path, "w") as fh:
        json.dump(entries, fh)
    return str(path)


def _authors_tree(root):
    """A few pairs in the authors' data/ layout (valset.json's naming), and the list that names them."""
    entries = []
    for i in range(3):
        lq, gt = f"data/Haze/RESIDE/Test/hazy/{i:04d}_0.8_0.2.jpg", f"data/Haze/RESIDE/Test/GT/{i:04d}.jpg"
        entries.append(_entry(lq, gt, "Haze", "RESIDE"))
    entries.append(_entry("data/Haze/REVIDE/Test/hazy/W002/00001.JPG", "data/Haze/REVIDE/Test/gt/W002/00001.JPG",
                          "Haze", "REVIDE"))
    entries.append(_entry("data/Motion blur/GoPro/Test/Blur/GOPR0384_11_00/blur/000001.png",
                          "data/Motion blur/GoPro/Test/GT/GOPR0384_11_00/sharp/000001.png", "Motion blur", "GoPro"))
    for i, e in enumerate(entries):
        write_rgb(str(root / e["image_path"]), seed=2 * i)
        write_rgb(str(root / e["target_path"]), seed=2 * i + 1)
    return entries


def test_list_groups_caps_and_names_as_the_release(tmp_path):
    entries = _authors_tree(tmp_path)
    path = _write_list(tmp_path / "test.json", entries)
    assert [e.task for e in read_list(path)] == ["haze"] * 4 + ["blur"]
    sets = list_datasets(path, str(tmp_path))
    assert [(d.benchmark.name, d.benchmark.task, len(d)) for d in sets] == [
        ("reside", "haze", 3), ("revide", "haze", 1), ("gopro", "blur", 1)]
    assert sets[0].pairing.method == "json-list" and sets[0].benchmark.expected == 3
    item = sets[0][1]
    assert item["file"] == "0001_0.8_0.2.jpg" and item["name"] == "0001_0.8_0.2" and item["lq"].shape == (3, 12, 16)
    assert sets[1].files == ["W002_00001.JPG"] and sets[2].files == ["GOPR0384_11_00_000001.png"]
    # the cap is per list file, in file order (the release stops after its first 5,001 entries)
    capped = list_datasets(path, str(tmp_path), cap=2)
    assert [(d.benchmark.name, len(d)) for d in capped] == [("reside", 2)]
    assert "first 2 of the 5 entries of test.json scored" in capped[0].notes[0]


def test_list_errors_name_the_entry_and_the_missing_files(tmp_path):
    entries = _authors_tree(tmp_path)
    with pytest.raises(DataError, match="not valid JSON"):
        (tmp_path / "bad.json").write_text("[{")
        read_list(str(tmp_path / "bad.json"))
    with pytest.raises(DataError, match="entry 1: expected an object with the string keys"):
        read_list(_write_list(tmp_path / "k.json", [entries[0], {"image_path": "a.png"}]))
    with pytest.raises(DataError, match=r"entry 0: unknown degradation 'Fog' \(the release accepts Haze, Rain"):
        read_list(_write_list(tmp_path / "d.json", [dict(entries[0], degradation="Fog")]))
    with pytest.raises(DataError, match="expected a JSON array"):
        read_list(_write_list(tmp_path / "o.json", {"a": 1}))
    os.remove(tmp_path / entries[1]["target_path"])
    path = _write_list(tmp_path / "test.json", entries)
    with pytest.raises(DataError, match=r"1 of 10 files not found under --root .*GT/0001\.jpg.*holds their data/"):
        list_datasets(path, str(tmp_path))


def test_saved_names_follow_infer_py():
    e = ListEntry
    assert saved_name(e("data/Haze/REVIDE/Test/hazy/W002/00001.JPG", "", "Haze", "REVIDE", 0)) == "W002_00001.JPG"
    assert saved_name(e("x/GoPro/GOPR0410_11_00/blur/000042.png", "", "Motion blur", "GoPro", 0)) \
        == "GOPR0410_11_00_000042.png"
    assert saved_name(e("data\\Rain\\Rain13K\\Test\\Rain\\7.jpg", "", "Rain", "Rain13K", 0)) == "7.jpg"


def test_table_sets_in_the_catalogue(tmp_path):
    make_pairs(str(tmp_path / "Snow100K-testset" / "Snow100K-L"), "synthetic", "gt", ["a.jpg", "b.jpg"],
               ["a.jpg", "b.jpg"])
    for member, n in (("Rain100H", 2), ("Test100", 3), ("GoPro", 1)):  # GoPro is not a Rain13K test set
        names = [f"{i}.png" for i in range(n)]
        make_pairs(str(tmp_path / "Deraining" / "Datasets" / "test" / member), "input", "target", names, names)
    for video in ("W001", "W002"):
        make_pairs(str(tmp_path / "REVIDE" / "Test"), f"hazy/{video}", f"gt/{video}", ["00001.JPG"], ["00001.JPG"])
        make_pairs(str(tmp_path / "LOL-Blur" / "test"), f"low_blur/{video}", f"high_sharp_scaled/{video}",
                   ["0001.png", "0002.png"], ["0001.png", "0002.png"])
    make_pairs(str(tmp_path / "CDD-11_test"), "haze_rain", "clear", ["001.png"], ["001.png"])
    make_pairs(str(tmp_path / "TOLED"), "LQ", "HQ", ["1.png"], ["1.png"])
    found = {loc.benchmark.name: loc for loc in find_all(str(tmp_path))}
    assert {"snow100k-l", "rain13k-test", "revide", "lolblur", "cdd", "toled"} <= set(found)
    rain = benchmark_dataset("rain13k-test", str(tmp_path))
    assert len(rain) == 5 and rain.pairing.method == "sequence-frame" and "Test100/input/2" in rain.names()
    assert get_benchmark("rain13k-test").expected == 4300 and "unknown" in get_benchmark("rain13k-test").note
    revide = benchmark_dataset("revide", str(tmp_path))
    assert revide.names() == ["W001/00001", "W002/00001"] and revide[1]["file"] == "00001.JPG"
    assert len(benchmark_dataset("lolblur", str(tmp_path))) == 4
    for name in ("snow100k-l", "lhp", "revide", "toled", "poled", "lolblur", "cdd"):
        b = get_benchmark(name)
        assert b.expected is None and ("unknown" in b.note or "not" in b.note), name  # counts not established


def test_release_schedule_from_the_training_list(tmp_path, capsys):
    assert (release_schedule(96000).total_iters, release_schedule(96000).warmup_iters) == (100000, 2000)
    s = release_schedule(410)  # valset.json's length: ceil(410 / 48) = 9 steps an epoch
    assert (s.iters_per_epoch, s.total_iters) == (9, 450)
    assert s.overrides(2) == ["train.total_iters=450", "train.warmup_iters=9", "train.save_every=9",
                              "train.val_every=4"]
    entries = _authors_tree(tmp_path)
    path = _write_list(tmp_path / "trainset.json", entries * 20)  # 100 entries
    assert schedule_for_list(path).total_iters == 50 * 3
    assert main(["data", "check", path, "--list-root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "100 entries" in out and "RESIDE (benchmark reside): 60 entries, Haze 60" in out
    assert "50 x 3 = 150 steps" in out and "train.total_iters=150 train.warmup_iters=3" in out
    assert main(["data", "check", path]) == 1  # relative paths without their root: reported missing
    assert "0 of 200 found" in capsys.readouterr().out
