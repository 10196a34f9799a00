
import numpy as np
import pytest
import torch

from data_helpers import make_pairs, write_png16, write_rgb
from varformer.cli import main
from varformer.data.catalog import find_all, get_benchmark, locate
from varformer.data.check import check_root
from varformer.data.image_io import read_image
from varformer.data.pairing import pair_files
from varformer.data.benchmark_data import benchmark_dataset
from varformer.errors import DataError


def test_every_layout_is_found_and_paired(layouts):
    found = {loc.benchmark.name: loc for loc in find_all(str(layouts))}
    assert {"rain100h", "rain100l", "test100", "sots-outdoor", "sots-indoor", "lol", "sidd-val",
            "cbsd68-s15", "cbsd68-s25", "cbsd68-s50"} <= set(found)
    counts = {"rain100h": 3, "rain100l": 2, "test100": 2, "sots-outdoor": 2, "sots-indoor": 2, "lol": 2,
              "sidd-val": 6, "cbsd68-s25": 3}
    for name, n in counts.items():
        ds = benchmark_dataset(name, str(layouts))
        assert len(ds) == n, name
        item = ds[0]
        assert item["lq"].shape[0] == 3 and item["lq"].shape == item["gt"].shape
        assert item["lq"].dtype == torch.float32 and 0 <= item["lq"].min() and item["lq"].max() <= 1


def test_gopro_two_copies_need_an_explicit_root(layouts):
    with pytest.raises(DataError, match="several copies"):
        locate("gopro", str(layouts))
    flat = benchmark_dataset("gopro", str(layouts / "deblur"))
    assert flat.located.layout == "input/groundtruth" and len(flat) == 2
    seq = benchmark_dataset("gopro", str(layouts / "GOPRO_Large" / "test"))
    assert seq.located.layout.startswith("sequences") and len(seq) == 4 and seq.pairing.method == "sequence-frame"
    assert "GOPR0862_11_00/blur/000002" in seq.names()


def test_name_rules():
    assert pair_files(["rain-1.png", "rain-12.png"], ["norain-12.png", "norain-1.png"], ("stem", "rain-norain")).pairs \
        == [("rain-1.png", "norain-1.png"), ("rain-12.png", "norain-12.png")]
    res = pair_files(["0001_0.8_0.2.jpg", "0001_0.9_0.1.jpg"], ["0001.png"], ("stem", "haze-prefix"))
    assert res.method == "haze-prefix" and len(res.pairs) == 2 and res.complete
    res = pair_files(["S1/blur/000002.png", "S1/blur/000001.png"], ["S1/sharp/000001.png", "S1/sharp/000002.png"],
                     ("stem", "sequence-frame"))
    assert res.method == "sequence-frame" and res.pairs[0] == ("S1/blur/000001.png", "S1/sharp/000001.png")
    res = pair_files(["a.png", "b.png"], ["x.png", "y.png"])
    assert res.method == "listing-order" and "listing order" in res.note and res.pairs[0] == ("a.png", "x.png")
    res = pair_files(["a.png", "b.png"], ["x.png"])  # counts differ: no silent order pairing
    assert res.pairs == [] and res.unpaired_lq == ["a.png", "b.png"]


def test_listing_order_fallback_is_reported(tmp_path):
    make_pairs(str(tmp_path / "Test100"), "input", "target", ["r1.png", "r2.png"], ["c1.png", "c2.png"])
    ds = benchmark_dataset("test100", str(tmp_path))
    assert ds.pairing.method == "listing-order" and any("listing order" in n for n in ds.notes)


def test_sots_indoor_gt_is_center_cropped(layouts):
    ds = benchmark_dataset("sots-indoor", str(layouts))
    item = ds[0]
    assert item["lq"].shape == item["gt"].shape == (3, 10, 14)
    assert any("centre-cropped" in n for n in ds.notes)


def test_noise_is_fixed_per_image(layouts):
    a = benchmark_dataset("cbsd68-s25", str(layouts))
    b = benchmark_dataset("cbsd68-s25", str(layouts))
    assert torch.equal(a[2]["lq"], b[2]["lq"]) and torch.equal(a[0]["lq"], b[0]["lq"])  # any access order
    std = (a[0]["lq"] - a[0]["gt"]).std().item()
    assert 0.05 < std < 0.12  # sigma 25/255 = 0.098, a little less after clipping
    assert not torch.equal(a[0]["lq"], benchmark_dataset("cbsd68-s50", str(layouts))[0]["lq"])
    air = benchmark_dataset("cbsd68-s15", str(layouts), noise_rule="airnet")
    first = [air[i]["lq"] for i in range(3)]
    assert torch.equal(air[1]["lq"], first[1])  # restarting the stream reproduces it
    assert first[0].shape == (3, 16, 16)  # AirNet centre-crops 20x24 to multiples of 16


def test_sidd_mat(layouts):
    ds = benchmark_dataset("sidd", str(layouts))
    assert len(ds) == 6 and ds.names()[4] == "01_01" and ds[0]["lq"].shape == (3, 8, 8)


def test_errors(tmp_path):
    with pytest.raises(DataError, match=r"test/Rain100H/\{input,target\}"):
        benchmark_dataset("rain100h", str(tmp_path / "missing"))
    with pytest.raises(DataError, match="no folder with its layout"):
        benchmark_dataset("rain100h", str(tmp_path))
    with pytest.raises(DataError, match="unknown benchmark"):
        get_benchmark("rain999")
    root = tmp_path / "Rain100H"
    names = [f"{i}.png" for i in range(14)]
    make_pairs(str(root), "input", "target", names, names)
    for i in range(12):
        write_rgb(str(root / "input" / f"extra{i:02d}.png"))
    with pytest.raises(DataError) as e:
        benchmark_dataset("rain100h", str(tmp_path))
    assert "12 input files without ground truth" in str(e.value) and "extra09.png" in str(e.value)
    assert "extra10.png" not in str(e.value) and "2 more" in str(e.value)
    ds = benchmark_dataset("rain100h", str(tmp_path), allow_unpaired=True)
    assert len(ds) == 14 and any("skipped unpaired" in n for n in ds.notes)
    # corrupt image, named
    (root / "target" / "3.png").write_bytes(b"not a png at all")
    with pytest.raises(DataError, match=r"unreadable or corrupt image: .*target/3.png"):
        ds[ds.names().index("3")]
    # size mismatch: both names and sizes
    write_rgb(str(root / "target" / "4.png"), 20, 30)
    with pytest.raises(DataError, match=r"4.png \(16x12\) and ground truth .*4.png \(30x20\)"):
        ds[ds.names().index("4")]
    # no pairs at all
    for rel in ("input/a.png", "input/b.png", "target/c.png"):
        write_rgb(str(tmp_path / "x" / "Test1200" / rel))
    with pytest.raises(DataError, match="no pairs found"):
        benchmark_dataset("test1200", str(tmp_path / "x"))


def test_conversions(tmp_path):
    gray = write_rgb(str(tmp_path / "g.png"), mode="L")
    img, note = read_image(str(tmp_path / "g.png"))
    assert img.shape == (12, 16, 3) and "grayscale" in note and np.allclose(img[..., 0], img[..., 2])
    write_rgb(str(tmp_path / "a.png"), mode="RGBA")
    img, note = read_image(str(tmp_path / "a.png"))
    assert img.shape == (12, 16, 3) and "alpha" in note
    arr = (np.arange(12 * 16).reshape(12, 16) * 300).astype(np.uint16)
    write_png16(str(tmp_path / "g16.png"), arr)
    img, note = read_image(str(tmp_path / "g16.png"))
    assert "16-bit" in note and np.allclose(img[..., 1], arr / 65535.0, atol=1e-6)
    write_png16(str(tmp_path / "c16.png"), np.stack([arr] * 3, -1))
    img, note = read_image(str(tmp_path / "c16.png"))
    assert "16-bit RGB PNG" in note and np.allclose(img[..., 0], (arr >> 8) / 255.0)


def test_data_check_reports_planted_unpaired_file(layouts, capsys):
    write_rgb(str(layouts / "test" / "Rain100H" / "input" / "planted_extra.png"))
    (layouts / "LOLdataset" / "eval15" / "high" / "22.png").write_bytes(b"\x89PNG broken")
    reports = {r.name: r for r in check_root(str(layouts), progress=False)}
    assert reports["rain100h"].unpaired_lq == ["planted_extra.png"] and not reports["rain100h"].ok
    assert reports["lol"].unreadable and reports["sots-outdoor"].ok
    rc = main(["data", "check", str(layouts)])
    out = capsys.readouterr().out
    assert rc == 1
    assert "rain100h" in out and "unpaired input: planted_extra.png" in out and "(expected 100)" in out
    assert "unreadable:" in out and "22.png" in out


def test_sidd_v73_without_h5py_is_a_clear_error(tmp_path):
    pytest.importorskip("scipy")
    try:
        import h5py  # noqa: F401
        pytest.skip("h5py installed: v7.3 files are readable")
    except ImportError:
        pass
    header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 ."
    header = header.ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02IM"
    for name in ("ValidationNoisyBlocksSrgb.mat", "ValidationGtBlocksSrgb.mat"):
        (tmp_path / name).write_bytes(header + b"\x00" * 512)
    with pytest.raises(DataError, match="v7.3.*h5py"):
        benchmark_dataset("sidd-val", str(tmp_path))


def test_super_resolution_sets_pair_by_resolution_suffix_and_check_the_scale(tmp_path):
    assert pair_files(["Canon_001_LR4.png", "0801x4.png", "img_lq.png"],
                      ["Canon_001_HR.png", "0801.png", "img_gt.png"], ("stem", "sr-suffix")).complete
    for name, folder, (lq_dir, gt_dir) in (("div2k-val", "DIV2K_V2_val", ("lq", "gt")),
                                           ("realsr", "RealSRVal_crop128", ("test_LR", "test_HR")),
                                           ("drealsr", "DrealSRVal_crop128", ("test_LR", "test_HR"))):
        write_rgb(tmp_path / folder / lq_dir / "a_LR4.png", 8, 6)
        write_rgb(tmp_path / folder / gt_dir / "a_HR.png", 32, 24)
        ds = benchmark_dataset(name, str(tmp_path))
        assert get_benchmark(name).task == "sr" and len(ds) == 1
        assert ds[0]["lq"].shape == (3, 8, 6) and ds[0]["gt"].shape == (3, 32, 24)
    assert [get_benchmark(n).expected for n in ("div2k-val", "drealsr", "realsr")] == [3000, 93, 100]
    write_rgb(tmp_path / "bad" / "RealSR" / "test_LR" / "b.png", 8, 8)
    write_rgb(tmp_path / "bad" / "RealSR" / "test_HR" / "b.png", 24, 24)
    with pytest.raises(DataError, match="not x4"):
        benchmark_dataset("realsr", str(tmp_path / "bad"))[0]
