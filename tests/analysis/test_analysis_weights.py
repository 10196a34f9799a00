"""``varformer analyze --weights``: a training run's checkpoint is taken (its EMA weights); any other file is one
line saying what it is (issue #26: it said "not a state dict of tensors (e.g. 'step')")."""
import pytest
import torch

from safety_utils import one_line
from varformer.analysis import load_model
from varformer.cli import main
from varformer.errors import CheckpointMismatchError


def test_a_training_checkpoint_is_analysed_and_other_files_are_named(small_runs, tmp_path, capsys):
    ckpt = small_runs["s2"] / "ckpt_00000001.pt"
    model = load_model(str(ckpt), torch.device("cpu"))
    assert model.settings().stage == 2 and not model.training
    torch.save({"features.0.weight": torch.zeros(1), "classifier.0.weight": torch.zeros(1)}, tmp_path / "vgg.pth")
    with pytest.raises(CheckpointMismatchError, match="VGG19 weights .*the analyses take VarFormer weights"):
        load_model(str(tmp_path / "vgg.pth"), torch.device("cpu"))
    assert main(["analyze", "dae-weights", "--weights", str(small_runs["base"] / "var.pth"), "--root", "demo"]) == 2
    line = one_line(capsys.readouterr().err)
    assert "var.pth is" in line and "state dict of tensors" not in line and "the analyses take" in line
