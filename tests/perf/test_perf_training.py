"""``varformer benchmark train``: argument checks (the timed small step runs in the demo-sized CI budget elsewhere)."""
import pytest

from varformer.cli import main
from varformer.perf.training import run_training_benchmark


def test_benchmark_train_rejects_bad_arguments(capsys):
    with pytest.raises(ValueError, match="stage must be 1 or 2"):
        run_training_benchmark(stage=3)
    with pytest.raises(ValueError, match="batch >= 1"):
        run_training_benchmark(batch=0)
    assert main(["benchmark", "train", "--steps", "0", "--skip-small"]) == 2
    assert "need batch >= 1 and steps >= 1" in capsys.readouterr().err
