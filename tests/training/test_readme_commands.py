"""Every training command of the README's "Commands" table dry-runs as written (its placeholder data folders
replaced by miniature layouts, its weight files by empty placeholders of the same names: a dry run locates
backbone files and reads only the metadata of VarFormer files), so the README stays true."""
import os
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from varformer.cli import main

README = Path(__file__).resolve().parents[2] / "README.md"
TASKS = ("blur", "lowlight", "realnoise", "rain", "noise", "haze")


def readme_train_commands():
    table = README.read_text().split("## Commands", 1)[1].split("\n## ", 1)[0]
    spans = re.findall(r"`([^`]+)`", table)
    return [s for s in spans if " train stage" in s and "--config" in s]


def _images(folder, n=2, seed=0):
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(os.path.join(folder, f"{i}.png"))


@pytest.fixture
def user_machine(tmp_path, monkeypatch):
    """A working folder with the README's data folders (miniature layouts) and weight files."""
    monkeypatch.chdir(tmp_path)
    _images(tmp_path / "DF2K")
    for task in TASKS:  # the generic <root>/<task>/{input,target} layout of every training task
        _images(tmp_path / "train" / task / "input")
        _images(tmp_path / "train" / task / "target")
    _images(tmp_path / "test" / "Test100" / "input", 3)
    _images(tmp_path / "test" / "Test100" / "target", 3)
    os.makedirs("checkpoints")
    for name in ("vae_ch160v4096z32.pth", "var_d20.pth", "vgg19-dcbb9e9d.pth"):
        Path("checkpoints", name).touch()  # located, never read by a dry run
    return {"/data/DF2K": str(tmp_path / "DF2K"), "/data/train": str(tmp_path / "train"),
            "/data/test": str(tmp_path / "test")}


def _stage1_results():
    """What the README's stage-1 commands leave behind, for its stage-2 commands (a dry run trains nothing)."""
    from varformer.model import VarFormerStage1, save_varformer
    save_varformer("runs/demo_stage1/final_ema.pt", VarFormerStage1(depth=2, vae_ch=32, n_cross=2))
    # the full-size stage-1 file: its metadata only (what a dry run reads), no tensors
    os.makedirs("runs/stage1")
    torch.save({"format": "varformer", "version": 1, "config": {"stage": 1, "depth": 20, "vae_ch": 160,
                                                                "n_cross": 20, "cfg": 0.5, "head_layout": "official"},
                "state_dict": {}}, "runs/stage1/final_ema.pt")


def _argv(command, places, memory=False):
    words = [places.get(w.split("=", 1)[-1], None) and f"{w.split('=', 1)[0]}={places[w.split('=', 1)[-1]]}" or w
             for w in shlex.split(command)]
    extra = ["--dry-run"] + ([] if memory else ["--no-memory"])
    if words[0] == "torchrun":
        nproc = next(w.split("=", 1)[1] for w in words if w.startswith("--nproc_per_node="))
        words = words[words.index("varformer") + 1:]
        extra += ["--world-size", nproc]
    else:
        words = words[1:]
    return words[:2] + extra + words[2:]  # options before --config, whose list takes the overrides


def test_every_readme_training_command_dry_runs(user_machine, capsys):
    commands = readme_train_commands()
    assert len(commands) == 5, commands  # demo stage 1 and 2, official stage 1 and 2, multi-GPU
    plans = {}
    for command in sorted(commands, key=lambda c: " stage2 " in c):  # stage 1 first, as a user runs them
        if " stage2 " in command and not os.path.exists("runs/stage1/final_ema.pt"):
            assert not os.path.exists("runs/stage1")  # the stage-1 dry runs wrote nothing
            _stage1_results()
        argv = _argv(command, user_machine)
        assert main(argv) == 0, (command, capsys.readouterr().err)
        plans[command] = capsys.readouterr().out
        assert "every check passed" in plans[command] and "output folder: " in plans[command], plans[command]
    s1, s2, multi = (next(p for c, p in plans.items() if key in c) for key in
                     ("configs/stage1.yaml", "varformer train stage2 --config configs/stage2.yaml", "torchrun"))
    assert "global batch 8 = 1 process(es) x 8 per process = 4 x 2 accumulated micro-batches" in s1
    assert "global batch 64 = 1 process(es) x 64 per process = 16 x 4 accumulated micro-batches" in s2
    assert "global batch 64 = 4 process(es) x 16 per process" in multi
    assert "validation: test100 (3 images)" in s2 and "at the start, every 10,000 steps, at the end" in s2
    assert "EMA weights, batch 1" in s2 and "x0.5 at step 400,000 -> 5e-05" in s2
    assert not os.path.exists("runs/stage2")  # a dry run writes nothing


def test_the_stage2_command_without_its_validation_set_stops_before_anything_is_built(user_machine, capsys):
    _stage1_results()
    command = next(c for c in readme_train_commands() if c.startswith("varformer train stage2 --config "
                                                                       "configs/stage2.yaml"))
    argv = [w for w in _argv(command, user_machine) if not w.startswith("eval.root=")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "validation set: benchmark 'test100' needs a root folder" in err and "eval.root" in err
    assert len(err.splitlines()) == 1


def test_the_dry_run_estimates_memory_per_device(user_machine, capsys):
    command = next(c for c in readme_train_commands() if "demo_stage1.yaml" in c)
    assert main(_argv(command, user_machine, memory=True)) == 0
    memory = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("memory: "))
    assert re.search(r"~\d+\.\d GiB per device = \d+\.\d GiB weights/gradients/Adam/EMA .* \+ 1 x \d+\.\d\d GiB "
                     r"activations per image \(fp32", memory), memory
