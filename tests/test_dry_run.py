"""Every subcommand's ``--dry-run`` prints its plan and trains, downloads, converts, evaluates and writes nothing:
each runs in a temporary folder (the working directory, the caches and the data all inside it) whose whole tree
is compared before and after. A subcommand that gains the flag without a case here fails the first test."""
import argparse
import importlib
import os

import numpy as np
import pytest
from huggingface_hub import constants as hf_constants
from PIL import Image

from varformer.cli import SUBCOMMANDS, main
from varformer.data.demo_set import DemoSpec, ensure_demo

TESTED = {("train",), ("reproduce", "paper"), ("reproduce", "ablations")}


def _parsers_with_dry_run(parser: argparse.ArgumentParser, path: tuple):
    """(command path, parser) for every (sub)parser that has ``--dry-run``."""
    for action in parser._actions:
        if "--dry-run" in action.option_strings:
            yield path
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                if path == ("analyze",):      # analyses come from the methods; none has a dry run
                    continue
                yield from _parsers_with_dry_run(sub, path + (name,))


def test_every_dry_run_flag_is_tested():
    found = set()
    for name in SUBCOMMANDS:
        parser = argparse.ArgumentParser()
        importlib.import_module(f"varformer.commands.{name}").add_arguments(parser)
        found |= set(_parsers_with_dry_run(parser, (name,)))
    assert found == TESTED, f"--dry-run without a test here: {found - TESTED}"


def _tree(root):
    """Every file and folder under ``root`` with its size and modification time."""
    out = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(folder, name)
            st = os.stat(path)
            out[os.path.relpath(path, root)] = (st.st_size, st.st_mtime_ns) if name in files else "dir"
    return out


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    """A working folder with a demo set, one benchmark and every cache inside it."""
    demo = ensure_demo(str(tmp_path / "demo"), DemoSpec(test_hw=(40, 48), train_hw=(64, 64), test_per_photo=1,
                                                        train_per_photo=1), log=None)
    rng = np.random.default_rng(0)
    for sub in ("input", "target"):
        os.makedirs(tmp_path / "data" / "Rain100H" / sub)
        Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(tmp_path / "data" / "Rain100H" /
                                                                               sub / "1.png")
    (tmp_path / "checkpoints").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("VARFORMER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("VARFORMER_DEMO_CACHE", str(tmp_path / "demo"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    return tmp_path, demo


def _dry(sandbox, capsys, args, rc=0):
    root, _ = sandbox
    before = _tree(root)
    assert main(args) == rc, capsys.readouterr().err
    assert _tree(root) == before, f"{' '.join(args)} wrote or changed files"
    return capsys.readouterr()


def test_train_dry_run(sandbox, capsys):
    _, demo = sandbox
    out = _dry(sandbox, capsys, ["train", "stage1", "--config", "demo_stage1.yaml", f"data.root={demo}/train/clean",
                                 "train.output_dir=runs/s1", "--dry-run", "--no-memory"]).out
    assert "dry run: every check passed; nothing was built or trained" in out
    assert not os.path.exists("runs")


def test_reproduce_paper_dry_run(sandbox, capsys):
    root, _ = sandbox
    args = ["reproduce", "paper", "--root", str(root / "data"), "--checkpoints-dir", str(root / "checkpoints"),
            "-o", "out", "--dry-run", "--max-images", "2"]
    out = _dry(sandbox, capsys, args).out
    assert "nothing was downloaded, converted, evaluated or written" in out
    assert "rain100h 1/100 images SHORT" in out and "INCOMPLETE: missing rain100l" in out
    assert "net_g_last.pth (released VarFormer (BasicSR checkpoint)): not here; will be downloaded" in out
    assert "will be hashed and converted once" in out and "protocol paper in fp32: 1 images -> out/paper" in out
    # offline, the missing files stop the dry run as they would stop the run: one line naming --checkpoints-dir
    err = _dry(sandbox, capsys, args + ["--offline"], rc=2).err
    assert f"--local-dir {root / 'checkpoints'}" in err and "Traceback" not in err


def test_reproduce_ablations_dry_runs(sandbox, capsys):
    root, demo = sandbox
    full = _dry(sandbox, capsys, ["reproduce", "ablations", "--train-root", "/d/train", "--stage1-root", "/d/df2k",
                                  "--dry-run"]).out
    assert full.count("varformer train") == 6
    small = _dry(sandbox, capsys, ["reproduce", "ablations", "--small", "--dry-run", "--demo-cache", demo]).out
    assert "nothing was built, trained or written" in small and f"demo set: {demo} (present)" in small
    assert "row 'baseline'" in small and "row 'full'" in small and "20 steps of demo_stage1.yaml" in small
    # no demo set yet: said, not built
    missing = _dry(sandbox, capsys, ["reproduce", "ablations", "--small", "--dry-run", "--demo-cache",
                                     str(root / "no_demo"), "--rows", "baseline"]).out
    assert "(will be built first: no manifest)" in missing and "stage1:" not in missing
    assert not os.path.exists(root / "no_demo")
