"""The ablation rows: full-size recipes equal to the official stage-2 recipe except the row's switches, the plan of
a full-size run, and the small mode training and evaluating rows on the demo set."""
import json
import os

import pytest
import torch
from omegaconf import OmegaConf

from varformer.cli import main
from varformer.config import load_config
from varformer.data.demo_set import DemoSpec
from varformer.model import read_varformer
from varformer.reproduce.ablations import ROWS, row_recipe, run_small_ablations

SWITCHES = ("prior", "aft", "mixup_skip")
G = "unet_encoder.guidance.level1."
ROW_MODULES = {"baseline": ["unet_encoder.conv_in.weight"], "fixed": [G + "select.proj.weight"],
               "dae": [G + "fuse.to_logits.weight", G + "bridge.proj.weight"], "aft": [G + "aft.q.weight"]}


def _flat(cfg, prefix=""):
    out = {}
    for k, v in cfg.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


@pytest.mark.parametrize("row", ROWS, ids=[r.name for r in ROWS])
def test_recipe_is_the_stage2_recipe_with_the_row_switches(row):
    official = _flat(OmegaConf.to_container(load_config("configs/stage2.yaml")))
    ours = _flat(OmegaConf.to_container(load_config(row_recipe(row))))
    differ = {k for k in official if official[k] != ours[k]}
    expected = {f"model.{k}" for k in row.switches if official[f"model.{k}"] != row.switches[k]}
    assert differ == expected | {"train.output_dir"}
    assert all(ours[f"model.{k}"] == v for k, v in row.switches.items())
    assert ours["train.output_dir"] == f"runs/ablations/{row.name}"


def test_rows_are_cumulative_and_end_at_todays_model():
    switches = [tuple(r.switches[k] for k in SWITCHES) for r in ROWS]
    assert switches == [("none", False, False), ("fixed", False, False), ("dae", False, False),
                        ("dae", True, False), ("dae", True, True)]
    assert [r.paper_psnr for r in ROWS] == sorted(r.paper_psnr for r in ROWS) and ROWS[-1].paper_psnr == 31.33


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
        assert {k: getattr(settings, k) for k in SWITCHES} == {k: r.row.switches[k] for k in SWITCHES}
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
    assert "| baseline, no VAR prior | prior=none, aft=False, mixup_skip=False | ~29.5 |" in out.table
    assert "| input (identity) | – | – |" in out.table
    assert os.path.isfile(tmp_path / "runs" / "ablations.md")
