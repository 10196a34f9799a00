"""``varformer benchmark model`` for any registered method: one run of two methods at tiny sizes (``--set``), the
weights path, the old flags, the 512x512 pricing from restorer traits and the tables (timings are reported, never
asserted)."""
import argparse
import json

import pytest
import torch

from varformer.cli import main
from varformer.commands import benchmark
from varformer.methods import registry
from varformer.methods.api import RestorerTraits
from varformer.perf.measure import Machine, Timing
from varformer.perf.model import (GLUE, MethodBenchmark, ModelBenchmark, Per512, PrecisionResult,
                                  flops_without_compute, per_512)
from varformer.perf.overrides import released_settings
from varformer.perf.report import format_model_report
from varformer.restorevar import RestoreVAR
from varformer.restorevar.files import save_restorevar

TINY = ["--set", "depth=2", "vae_ch=32", "varformer.n_cross=1", "patch_nums=[1,2,3,4]", "refiner_depth=1"]
QUICK = ["--precision", "fp32", "--batch-size", "1", "--warmup", "0", "--repeat", "1", "--no-bounds"]


def test_two_methods_side_by_side_from_one_run(tmp_path, capsys):
    threads = torch.get_num_threads()
    out_json = tmp_path / "r.json"
    torch.set_num_threads(2)
    try:
        assert main(["benchmark", "model", "--method", "varformer", "restorevar", *TINY, *QUICK, "--threads", "1",
                     "--json", str(out_json)]) == 0
        assert torch.get_num_threads() == 2          # --threads holds for the run only
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    side = out[out.index("## Side by side"):]
    rows = [line for line in side.splitlines() if line.startswith("| VarFormer |") or line.startswith("| RestoreVAR |")]
    assert [r.split(" | ")[0] for r in rows] == ["| VarFormer", "| RestoreVAR"]
    r = json.loads(out_json.read_text())
    vf, rv = r["methods"]
    assert (vf["method"], rv["method"]) == ("varformer", "restorevar")
    assert vf["config"]["depth"] == rv["config"]["depth"] == 2 and rv["config"]["patch_nums"] == [1, 2, 3, 4]
    assert vf["config"]["n_cross"] == 1
    for m in (vf, rv):
        assert sum(m["flop_groups"].values()) == m["flops_per_input"] > 0
        assert sum(m["param_groups"].values()) == m["params"]
        shares = m["results"][0]["part_shares"]
        assert set(shares) == set(m["parts"]) and m["parts"][-1] == GLUE and abs(sum(shares.values()) - 1) < 1e-6
        assert m["tensor_peaks"]["fp32"] > 0
    # VarFormer: 256x256 tiles at the evaluator's overlap (9 for 512x512); RestoreVAR resizes to its input (64 here)
    assert vf["per_512"]["inputs"] == 9 and rv["per_512"]["inputs"] == 1
    assert vf["input_shapes"] == [[1, 3, 256, 256]] and rv["input_shapes"] == [[1, 3, 64, 64]]
    # VarFormer's official-style reference (its BenchmarkEntry.reference) gives the model's output
    assert vf["reference"]["max_abs_diff_vs_model_fp32"] < 1e-5 and rv["reference"] is None
    assert vf["reference"]["flops_per_input"] > vf["flops_per_input"]
    assert f"| {9 * vf['flops_per_input'] / 1e9:.1f} |" in rows[0]


def test_a_weights_file_of_any_method_names_its_method(tmp_path, capsys):
    torch.manual_seed(0)
    path = save_restorevar(tmp_path / "rv.safetensors",
                           RestoreVAR(depth=1, vae_ch=32, patch_nums=(1, 2, 3, 4), refiner_depth=0))
    assert main(["benchmark", "model", "--weights", str(path), *QUICK, "--no-reference"]) == 0
    out = capsys.readouterr().out
    assert f"weights: {path}" in out and "| RestoreVAR |" in out and "VarFormer" not in out
    assert main(["benchmark", "model", "--method", "varformer", "--weights", str(path)]) == 2
    assert "is a restorevar file" in capsys.readouterr().err
    assert main(["benchmark", "model", "--weights", str(path), "--set", "depth=2"]) == 2
    assert "brings its own" in capsys.readouterr().err


def test_settings_are_checked_before_any_work(capsys):
    for argv, says in ((["--set", "depth=two"], "could not be converted"),
                       (["--set", "n_cross=1", "--method", "restorevar"], "'n_cross' is not a setting of restorevar"),
                       (["--set", "depth=2"], "n_cross must lie in [0, depth=2]"),
                       (["--switch", "nope"], "not a switch of varformer")):
        assert main(["benchmark", "model", *argv]) == 2
        err = capsys.readouterr().err
        assert says in err and len(err.strip().splitlines()) == 1, err


def test_old_flags_are_aliases_that_say_the_new_spelling(capsys):
    p = argparse.ArgumentParser()
    benchmark.add_arguments(p)
    args = p.parse_args(["model", "--method", "both", "--depth", "2", "--patch-nums", "1", "2", "3",
                         "--refiner-depth", "1", "--bf16-transformer", "--set", "vae_ch=32"])
    methods, overrides, switches = benchmark._model_arguments(args)
    assert methods == ("all",) and switches == ("bf16-transformer",)
    assert overrides == ("vae_ch=32", "depth=2", "patch_nums=[1,2,3]", "refiner_depth=1")
    err = capsys.readouterr().err
    assert "--depth is deprecated; use --set depth=2" in err and "use --switch bf16-transformer" in err
    assert "--method both is deprecated; use --method all" in err
    # the aliases give the settings the old flags gave
    spec = registry.get("restorevar")
    assert released_settings(spec, ["depth=2", "patch_nums=[1,2,3]"]).patch_nums == [1, 2, 3]


def test_a_512_image_is_priced_from_the_restorer_traits():
    assert per_512(RestorerTraits(input_size=256), 256, 32).inputs == 9        # 3 x 3 tiles at overlap 32
    assert per_512(RestorerTraits(input_size=256), 256, 0).inputs == 4
    one = per_512(RestorerTraits(input_size=512, resize_to_input=True), 512, 32)
    assert one.inputs == 1 and one.exact and "resized to 512x512" in one.note
    anysize = per_512(RestorerTraits(input_size=None), 256, 32)
    assert anysize.inputs == 4 and not anysize.exact and "approx." in anysize.note
    sr = per_512(RestorerTraits(input_size=None, scale=4), 128, 32)
    assert sr.inputs == 1 and sr.exact and "a 128x128 input gives the 512x512 output" in sr.note
    sr_tiled = per_512(RestorerTraits(input_size=64, scale=4), 64, 16)
    assert sr_tiled.inputs == 9 and "128x128 input" in sr_tiled.note        # 128 px in 64 px tiles, overlap 16
    # a pre-upsampling super-resolver (VARestorer) runs at the output's resolution, tiled at its release's overlap
    pre = per_512(RestorerTraits(input_size=512, scale=4, upsample="lanczos", tile_overlap=128), 512, 32)
    assert pre.inputs == 1 and "1 tile of 512x512 at overlap 128" in pre.note and "upsampled (lanczos)" in pre.note
    small = per_512(RestorerTraits(input_size=256, scale=4, upsample="lanczos", tile_overlap=64), 256, 32)
    assert small.inputs == 9 and "9 tiles of 256x256 at overlap 64" in small.note   # 512 px, stride 192


def test_flop_groups_of_a_method_come_from_its_spec():
    spec = registry.get("restorevar")
    f = flops_without_compute(spec, released_settings(spec, ["depth=2", "vae_ch=32", "patch_nums=[1,2,3,4]",
                                                             "refiner_depth=0"]))
    assert f["flop_groups"]["refiner"] == 0 and f["param_groups"]["refiner"] == 0
    assert sum(f["flop_groups"].values()) == f["flops"] and min(v for k, v in f["flop_groups"].items()
                                                                if k != "refiner") > 0
    assert "reference" not in f


def test_tables():
    machine = Machine(device="cpu", device_name="x86_64", threads=2, load_average=1.0, cpu_flags={})
    res = MethodBenchmark(
        method="m", title="M", description="tiny", config={"depth": 2}, weights_note="random weights", params=10 ** 7,
        input_shapes=[(1, 3, 256, 256)], flops_per_input=10 ** 11,
        flop_groups={"a": 6 * 10 ** 10, "rest": 4 * 10 ** 10},
        param_groups={"a": 10 ** 7, "rest": 0}, model_memory_bytes=2 ** 28, batch=4,
        results=[PrecisionResult("fp32", Timing(2.0, 4.0, 2 ** 30), 0.6, 3.0, 50.0, 25.0,
                                 {"p": 0.75, GLUE: 0.25})],
        per_512=Per512(9, True, "9 tiles"), parts=["p", GLUE],
        reference={"label": "ref.", "description": "as the authors run it", "b1": Timing(3.0, 6.0, 2 ** 31),
                   "flops_per_input": 1.1e11, "max_abs_diff_vs_model_fp32": 0.0},
        tensor_peaks={"fp32": 2 ** 29, "reference": 2 ** 30})
    text = format_model_report(ModelBenchmark(machine, [res], 32))
    assert "| fp32 | 2.000 | 4.000 | 0.600 | 3.000 | 0.50 GiB | 1.00 GiB | 50.0 / 25.0 | 50.0 / 25.0 |" in text
    assert "| ref. | 3.000 | 6.000 | - | - | 1.00 GiB | 2.00 GiB |" in text
    assert "wall 1.50x, CPU time 1.50x" in text and "10.0% more" in text and "| p | 75.0% |" in text
    assert "| M | tiny | fp32 | 3x256x256 | 10.0 | 100.0 | 2.000 | 4.000 | 0.50 GiB | 900.0 | 18.00 |" in text
    assert "a 60.0 GFLOP / 10.00 M" in text
    # batch 1 only: no throughput columns (they would repeat the batch-1 ones under the same names)
    res.batch = 1
    one = format_model_report(ModelBenchmark(machine, [res], 32))
    assert "| fp32 | 2.000 | 4.000 | 0.50 GiB | 1.00 GiB | 50.0 / 25.0 | 50.0 / 25.0 |" in one
    assert "throughput" not in one and one.count("CPU time b1 (s/input)") == 1


def test_image_size_argument(capsys):
    with pytest.raises(SystemExit):
        main(["benchmark", "model", "--image", "4kx2k"])
    assert "expected HxW" in capsys.readouterr().err
