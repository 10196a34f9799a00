"""The training-step memory estimate (fake tensors: nothing computed) on a small configuration."""
from varformer.model import VarFormerSettings
from varformer.model.memory import estimate_saved_activations


def test_activation_estimate_falls_with_checkpointing_and_bf16():
    s2 = VarFormerSettings(stage=2, depth=2, vae_ch=32, n_cross=2)
    plain, pb = estimate_saved_activations(s2, checkpointing=False)
    ckpt, _ = estimate_saved_activations(s2, checkpointing=True)
    assert 0 < plain["bf16"] < plain["fp32"]
    assert 0 < ckpt["fp32"] < plain["fp32"] / 2 and ckpt["bf16"] < plain["bf16"]
    # 4 bytes (weights) + 4 (grads) + 8 (Adam) + 4 (EMA) per trainable parameter, 4 per frozen one
    assert pb["state_bytes"] == 20 * pb["trainable_params"] + 4 * pb["frozen_params"]
    stage1, _ = estimate_saved_activations(s2.replace(stage=1), checkpointing=False)
    assert 0 < stage1["fp32"] < plain["fp32"]  # no U-Net in stage 1
