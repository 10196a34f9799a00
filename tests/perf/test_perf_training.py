"""``varformer benchmark train --method NAME --stage S``: real optimiser steps of a stage's demo recipe (the stages
before it built and carried over), the full recipe's memory estimate (or none), and the argument checks."""
import dataclasses

import pytest
import torch

from varformer.cli import main
from varformer.data.demo_set import DemoSpec, ensure_demo
from varformer.errors import ConfigError
from varformer.methods import registry
from varformer.perf.training import _estimate_lines, default_stage, run_training_benchmark

SMALL = DemoSpec(test_hw=(40, 48), train_hw=(40, 40), test_per_photo=1, train_per_photo=1)


def test_steps_of_a_later_stage_carry_the_earlier_one(tmp_path, monkeypatch, capsys):
    """RestoreVAR's stage 2 needs a stage-1 file: the demo's stage 1 is built, exported and carried over."""
    monkeypatch.setenv("VARFORMER_DEMO_CACHE", ensure_demo(str(tmp_path / "demo"), SMALL, log=None))
    threads = torch.get_num_threads()
    assert main(["benchmark", "train", "--method", "restorevar", "--stage", "stage2", "--batch-size", "1", "--steps",
                 "1", "--precision", "fp32", "--device", "cpu", "--threads", str(threads + 1)]) == 0
    assert torch.get_num_threads() == threads
    out, err = capsys.readouterr()
    lines = out.strip().splitlines()
    assert lines[0].startswith("RestoreVAR stage2, demo recipe demo_restorevar_stage2.yaml (")
    assert "batch 1, fp32, cpu): " in lines[0] and "s/step" in lines[0] and "refiner_l1" in lines[0]
    assert lines[1] == "RestoreVAR stage2, full-size activation memory: none (the stage gives no estimate)"
    assert "stage1 of the demo recipe (demo_restorevar_stage1.yaml) built with random weights" in err


def test_the_full_recipe_estimate_per_precision_and_checkpointing():
    """The stage's own estimate on its shipped recipe, in fp32 and bf16, without and with activation checkpointing
    (a stand-in estimate here: the real one traces the full-size model for minutes on a CPU)."""
    spec = registry.get("varformer")
    seen = []

    def estimate(cfg, micro, precision):
        seen.append((cfg.model.depth, cfg.model.stage, micro, precision, bool(cfg.train.grad_checkpointing)))
        per_image = (2 if precision == "fp32" else 1) * 2 ** 30 // (4 if cfg.train.grad_checkpointing else 1)
        return 3 * 2 ** 30, per_image, {"trainable_params": 10 ** 6, "frozen_params": 2 * 10 ** 6}

    stage = dataclasses.replace(spec.stage("stage1"), estimate_memory=estimate)
    lines = _estimate_lines(spec, stage, ["model.depth=2", "model.n_cross=2"], log=lambda m: None)
    assert [s[3:] for s in seen] == [("fp32", False), ("bf16", False), ("fp32", True), ("bf16", True)]
    assert {s[:3] for s in seen} == {(2, 1, 4)}        # the recipe's micro-batch; configure() set the stage
    assert "shipped recipe stage1.yaml" in lines[0] and "checkpointing off" in lines[0]
    assert "2.0 GiB fp32, 1.0 GiB bf16 autocast; weights/grads/Adam/EMA 3.0 GiB (1 M trainable, 2 M frozen)" in lines[0]
    assert "the recipe's 4 per device: ~11 GiB fp32, ~7 GiB bf16" in lines[0]
    assert "checkpointing on : saved activations per image 0.5 GiB fp32" in lines[1]


def test_benchmark_train_rejects_bad_arguments(capsys):
    with pytest.raises(ConfigError, match="has no training stage 'stage3'"):
        run_training_benchmark("varformer", "stage3", small=False, estimate=False)
    with pytest.raises(ValueError, match="batch >= 1"):
        run_training_benchmark(batch=0)
    assert main(["benchmark", "train", "--steps", "0", "--skip-small"]) == 2
    assert "need batch >= 1 and steps >= 1" in capsys.readouterr().err
    # the old stage numbers still work, and say the new spelling
    assert main(["benchmark", "train", "--stage", "3", "--skip-small", "--no-estimate"]) == 2
    err = capsys.readouterr().err
    assert "--stage 3 is deprecated; use --stage stage3" in err and "has no training stage 'stage3'" in err
    assert default_stage(registry.get("varformer")) == "stage2"


def test_every_stage_names_a_shipped_full_recipe_of_its_method():
    import os

    from varformer.config import load_config, method_of, recipe_path
    for spec in registry.methods().values():
        for stage in spec.stages:
            if stage.recipe:
                assert os.path.isfile(recipe_path(stage.recipe)), (spec.name, stage.name)
                assert method_of(load_config(stage.recipe)) is spec, (spec.name, stage.name)
