"""The training-step cost estimates (``varformer benchmark train``) on a small configuration."""
import pytest

from varformer.training.memory import estimate_saved_activations, run_training_benchmark
from varformer.cli import main


def test_activation_estimate_falls_with_checkpointing_and_bf16():
    plain, pb = estimate_saved_activations(2, depth=2, vae_ch=32, n_cross=2, dec_adjust=False, checkpointing=False)
    ckpt, _ = estimate_saved_activations(2, depth=2, vae_ch=32, n_cross=2, dec_adjust=False, checkpointing=True)
    assert 0 < plain["bf16"] < plain["fp32"]
    assert 0 < ckpt["fp32"] < plain["fp32"] / 2 and ckpt["bf16"] < plain["bf16"]
    # 4 bytes (weights) + 4 (grads) + 8 (Adam) + 4 (EMA) per trainable parameter, 4 per frozen one
    assert pb["state_bytes"] == 20 * pb["trainable_params"] + 4 * pb["frozen_params"]
    stage1, _ = estimate_saved_activations(1, depth=2, vae_ch=32, n_cross=2, dec_adjust=False, checkpointing=False)
    assert 0 < stage1["fp32"] < plain["fp32"]  # no U-Net in stage 1


def test_benchmark_train_rejects_bad_arguments(capsys):
    with pytest.raises(ValueError, match="stage must be 1 or 2"):
        run_training_benchmark(stage=3)
    with pytest.raises(ValueError, match="batch >= 1"):
        run_training_benchmark(batch=0)
    assert main(["benchmark", "train", "--steps", "0", "--skip-small"]) == 2
    assert "need batch >= 1 and steps >= 1" in capsys.readouterr().err
