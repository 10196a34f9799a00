"""The ablation rows (VarFormer's ``MethodSpec.ablations``): full-size recipes equal to the official stage-2 recipe
except the row's switches, the plan of a full-size run, the small mode training and evaluating rows on the demo
set, and tables that say which recipe each row trained and which published value, exact or approximate, it sits
beside (a Δ only where they measure the same thing)."""
import json
import os

import pytest
import torch
import yaml
from omegaconf import OmegaConf

from varformer.cli import main
from varformer.config import load_config
from varformer.data.demo_set import DemoSpec
from varformer.methods import registry
from varformer.model import read_varformer
from varformer.reproduce.ablations import RowResult, full_table, row_recipe, run_small_ablations, why_no_delta

ABL = registry.get(registry.DEFAULT).ablations
ROWS = ABL.rows

SWITCHES = ("prior", "aft", "mixup_skip")
G = "unet_encoder.guidance.level1."
ROW_MODULES = {"baseline": ["unet_encoder.conv_in.weight"], "fixed": [G + "select.proj.weight"],
               "dae": [G + "fuse.to_logits.weight", G + "bridge.proj.weight"], "aft": [G + "aft.q.weight"]}


def _switches(row):
    """The row's ``model.*`` overrides as values."""
    return {o.split("=")[0][len("model."):]: yaml.safe_load(o.split("=", 1)[1]) for o in row.overrides}


def _flat(cfg, prefix=""):
    out = {}
    for k, v in cfg.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


@pytest.mark.parametrize("row", ROWS, ids=[r.name for r in ROWS])
def test_recipe_is_the_stage2_recipe_with_the_row_switches(row):
    official = _flat(OmegaConf.to_container(load_config("configs/stage2.yaml")))
    ours = _flat(OmegaConf.to_container(load_config(row_recipe(ABL, row))))
    switches = _switches(row)
    differ = {k for k in official if official[k] != ours[k]}
    expected = {f"model.{k}" for k in switches if official[f"model.{k}"] != switches[k]}
    assert differ == expected | {"train.output_dir"}
    assert all(ours[f"model.{k}"] == v for k, v in switches.items())
    assert ours["train.output_dir"] == f"runs/ablations/{row.name}"


def test_rows_are_cumulative_and_end_at_todays_model():
    switches = [tuple(_switches(r)[k] for k in SWITCHES) for r in ROWS]
    assert switches == [("none", False, False), ("fixed", False, False), ("dae", False, False),
                        ("dae", True, False), ("dae", True, True)]
    assert [r.published for r in ROWS] == sorted(r.published for r in ROWS) and ROWS[-1].published == 31.33
    assert [r.exact for r in ROWS] == [False] * 4 + [True] and [r.first_stage for r in ROWS] == [False] + [True] * 4


def test_full_size_plan(capsys):
    args = ["reproduce", "ablations", "--train-root", "/d/train", "--stage1-root", "/d/df2k", "--dry-run",
            "train.total_iters=1000"]
    assert main(args) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 6 and "stage1" in lines[0] and "data.root=/d/df2k" in lines[0]
    s1 = "model.stage1_weights=runs/ablations/stage1/final_ema.pt"
    for row, line in zip(ROWS, lines[1:]):
        assert f"ablations/{row.name}.yaml" in line and "train.total_iters=1000" in line
        assert (s1 in line) == (row.name != "baseline")
    assert main(["reproduce", "ablations", "--train-root", "/d/train", "--dry-run"]) == 2
    assert "--stage1-weights" in capsys.readouterr().err


def test_small_mode_trains_and_evaluates_every_row(tmp_path):
    """One training step of every row but the full one (today's model, which tests/training/test_stages.py trains
    for several), after one shared stage-1 step, through the trainer of every run; evaluated on the demo rain set.
    (A step of a DAE row costs seconds on a CPU: more steps would test the trainer again, not the rows.)"""
    spec = DemoSpec(test_hw=(40, 48), train_hw=(264, 264), test_per_photo=1, train_per_photo=1)
    rows = [r.name for r in ROWS if r.name != "full"]
    # the official residual init 0.5 (the demo's identity start gives the U-Net no gradient at step 1)
    out = run_small_ablations(str(tmp_path / "runs"), rows, stage1_steps=1, steps=1,
                              demo_cache=str(tmp_path / "demo"), spec=spec, benchmarks=["demo-rain"],
                              extra=["demo.input_weight_init=0.5", "demo.input_weight_lr_scale=1"], log=lambda s: None)
    assert [r.row.name for r in out.results] == rows
    for r in out.results:
        settings, _ = read_varformer(r.export)
        assert {k: getattr(settings, k) for k in SWITCHES} == {k: _switches(r.row)[k] for k in SWITCHES}
        assert r.steps == 1 and r.psnr["demo-rain"] > 10
        # the row's own modules took the optimizer step: the online weights left the EMA (which moved 2 %)
        ckpt = torch.load(tmp_path / "runs" / r.row.name / "ckpt_00000001.pt", weights_only=False)
        for key in ROW_MODULES[r.row.name]:
            moved = (ckpt["model"][key] - ckpt["ema"][key]).abs().max()
            assert moved > 1e-5 * ckpt["ema"][key].abs().max().clamp(min=1), (r.row.name, key)
    params = [r.params_m for r in out.results]
    assert params[0] < params[1] < params[2] < params[3]      # each row adds modules
    saved = json.loads((tmp_path / "runs" / "ablations.json").read_text())
    assert [r["row"] for r in saved["rows"]] == rows
    assert ("| baseline, no VAR prior | prior=none, aft=false, mixup_skip=false, n_cross=0, dec_adjust=false | "
            "demo_stage2.yaml: U-Net width 32, no VAR prior; 1 steps | ~29.5 (approx.) |") in out.table
    assert "| + DAE | prior=dae, aft=false, mixup_skip=false | demo_stage2.yaml: VAR d2, width 32, 2 cross-attention" \
        in out.table
    assert "| input (identity) | – | – | – |" in out.table and "demo-rain 3/6 images SHORT" in out.table
    assert "protocol `paper`, fp32" in out.table and "no Δ is printed" in out.table
    assert os.path.isfile(tmp_path / "runs" / "ablations.md")


def _result(row, cfg, psnr, images):
    sets = {n: {"task": "rain", "images": images.get(n, e), "expected": e, "psnr": psnr}
            for n, e in (("rain100h", 100), ("rain100l", 100), ("test100", 100), ("test1200", 1200),
                         ("test2800", 2800))}
    return RowResult(row, f"x.yaml: {ABL.describe_recipe(cfg)}", 700000, 1.0, 1.0,
                     {n: psnr for n in sets}, sets, "e.pt", why_no_delta(row, cfg))


def test_full_table_says_what_each_row_sits_beside():
    full, aft = ROWS[-1], ROWS[-2]
    recipe = load_config(row_recipe(ABL, full))
    assert why_no_delta(full, recipe) == ("other recipe: depth 16 there, 20 here, n_cross 8 there, 6 here, "
                                          "dec_adjust False there, True here")
    assert why_no_delta(aft, load_config(row_recipe(ABL, aft))) == "approximate reference"
    released = load_config(row_recipe(ABL, full), ["model.depth=16", "model.n_cross=8", "model.dec_adjust=false"])
    assert why_no_delta(full, released) is None
    sets = list(ABL.benchmarks)
    table = full_table([_result(aft, load_config(row_recipe(ABL, aft)), 30.0, {}),
                        _result(full, recipe, 31.0, {}), _result(full, released, 31.5, {}),
                        _result(full, released, 31.5, {"test2800": 10})], ABL, sets, [])
    assert ("| + AFT | x.yaml: VAR d20, width 160, 6 cross-attention blocks, decoder alignment on; 700,000 steps | "
            "30.00 | ~31.1 (approx.) | – (approximate reference) |") in table
    assert "| 31.00 | 31.33 (exact) | – (other recipe: depth 16 there, 20 here" in table
    assert "VAR d16, width 160, 8 cross-attention blocks, decoder alignment off; 700,000 steps | 31.50 | 31.33 " \
           "(exact) | +0.17 |" in table                                    # the released recipe: a Δ
    assert "| 31.50 (short: test2800) | 31.33 (exact) | – (partial column) |" in table
    assert "under protocol `paper` in fp32, mean over rain100h 100/100 images" in table
    assert "main table's Deraining value of the released model (VAR d16, 8 cross-attention blocks" in table
