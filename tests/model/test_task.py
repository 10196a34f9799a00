"""Stage integration on the small model (vae_ch 32, VAR depth 2, random backbone) and the demo set."""
import math
import os

import pytest
import torch

from varformer.config import load_config
from varformer.model.loss import VarFormerLoss
from varformer.model.task import VarFormerTask, freeze_for

SMALL = ["model.depth=2", "model.vae_ch=32", "model.n_cross=2", "model.random_init_backbone=true"]


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory):
    from torchvision.models.vgg import cfgs, make_layers
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in make_layers(cfgs["E"])[:4].state_dict().items()}
    path = tmp_path_factory.mktemp("vgg") / "vgg19-dcbb9e9d.pth"
    torch.save({f"features.{k}": torch.randn(s) * 0.1 for k, s in shapes.items()}, path)
    return str(path)


def _groups(model):
    """Representative trainable parameters per module group of the gradient-routing table (training/losses.py)."""
    return {
        "adapter": [p for p in model.adapter.parameters()],
        "cross_attn": [p for p in model.cross_attn.parameters()],
        "var_embed_head": [model.var.head.weight, model.var.word_embed.weight, model.var.pos_1LC],
        "unet": [model.unet_decoder.conv_out.weight, model.input_weight],
    }


def test_gradient_routing_matches_the_spec_table(vgg_file):
    from varformer.model import VarFormer
    torch.manual_seed(0)
    model = VarFormer(depth=2, vae_ch=32, n_cross=2)
    freeze_for(model, 2, "official")
    cfg = load_config(None, [f"train.loss.vgg_path={vgg_file}", "train.loss.perceptual_layer=relu1_2"])
    task = VarFormerTask(model, VarFormerLoss.from_config(cfg.train.loss, 2), 2).train()
    lq, gt = torch.rand(1, 3, 256, 256), torch.rand(1, 3, 256, 256)
    gt_pm1 = gt * 2 - 1
    tokens, feat = task.clean_targets(gt_pm1)
    out = model.training_outputs(lq)
    from varformer.model.loss import feature_mse, pixel_l1, psnr_loss, token_cross_entropy
    terms = {"pixel_l1": pixel_l1(out.restored, gt_pm1), "psnr": psnr_loss(out.restored, gt_pm1),
             "perceptual": task.loss.vgg(out.restored, gt_pm1),
             "token_ce": token_cross_entropy(out.logits, tokens), "feature_l2": feature_mse(out.lq_feat, feat)}
    # which modules each term trains (varformer/training/losses.py)
    table = {"pixel_l1": {"unet"}, "psnr": {"unet"}, "perceptual": {"unet"},
             "token_ce": {"cross_attn", "var_embed_head"}, "feature_l2": {"adapter"}}
    groups = _groups(model)
    for term, value in terms.items():
        reached = set()
        for name, params in groups.items():
            grads = torch.autograd.grad(value, params, retain_graph=True, allow_unused=True)
            if any(g is not None and g.abs().sum() > 0 for g in grads):
                reached.add(name)
        assert reached == table[term], (term, reached)
    # frozen parts never receive gradients: the VQVAE and the VAR blocks have requires_grad=False
    assert not any(p.requires_grad for p in model.vae.parameters())
    assert not any(p.requires_grad for p in model.var.blocks.parameters())


def test_paper_formulation_freezes_var_and_stage1_parts():
    from varformer.model import VarFormer, VarFormerStage1
    with torch.device("meta"):
        s2, s1 = VarFormer(depth=2, vae_ch=32, n_cross=2), VarFormerStage1(depth=2, vae_ch=32, n_cross=2)
    freeze_for(s2, 2, "paper")
    freeze_for(s1, 1, "paper")
    trainable2 = {n.split(".")[0] for n, p in s2.named_parameters() if p.requires_grad}
    trainable1 = {n.split(".")[0] for n, p in s1.named_parameters() if p.requires_grad}
    assert trainable2 == {"unet_encoder", "unet_decoder", "input_weight"}
    assert trainable1 == {"adapter", "cross_attn"}
    freeze_for(s1, 1, "official")
    assert {n.split(".")[0] for n, p in s1.named_parameters() if p.requires_grad} == {"adapter", "cross_attn", "var"}


def test_short_stage1_then_stage2_run_on_demo_data(tmp_path, vgg_file, capsys):
    from varformer.model import load_varformer
    from varformer.training.run import run_training
    common = SMALL + ["data.batch_size=1", "data.num_workers=0", "train.total_iters=1",
                      "train.log_every=1", "train.image_every=1", "train.device=cpu", "train.precision=bf16"]
    s1_dir = tmp_path / "s1"
    cfg1 = load_config("configs/demo_stage1.yaml", common + [f"train.output_dir={s1_dir}"])
    r1 = run_training("stage1", cfg1, progress=False)
    assert r1.status == "finished" and os.path.isfile(s1_dir / "ckpt_00000001.pt")
    assert os.path.isfile(s1_dir / "config.yaml") and os.path.isfile(r1.export)
    assert {"loss/token_ce", "loss/feature_l2", "loss/metric_pixel_l1"} <= set(r1.history[0])

    s2_dir = tmp_path / "s2"
    cfg2 = load_config("configs/demo_stage2.yaml", common + [
        f"train.output_dir={s2_dir}", f"model.stage1_weights={s1_dir / 'ckpt_00000001.pt'}",
        "train.val_every=1", "train.val_images=1", f"train.loss.vgg_path={vgg_file}", "train.loss.perceptual=1.0",
        "train.loss.perceptual_layer=relu1_2"])
    r2 = run_training("stage2", cfg2, progress=False)
    err = capsys.readouterr().err
    assert "RANDOM-INIT" in err and "tensors from stage 1" in err
    assert r2.status == "finished"
    logs = [h for h in r2.history if "loss/total" in h]
    assert {"loss/pixel_l1", "loss/psnr", "loss/perceptual", "loss/token_ce", "loss/feature_l2"} <= set(logs[0])
    vals = [h for h in r2.history if "val/psnr" in h]
    assert vals and vals[0]["val/psnr"] > 0 and "val/psnr_input" in vals[0]
    assert math.isfinite(vals[0]["val/loss"])  # the image terms of the loss on the held-out images
    restored = load_varformer(r2.export, expect_stage=2)
    s1_ck = torch.load(s1_dir / "ckpt_00000001.pt", weights_only=False)
    # (the stage-2 step then trained these further; before it they were the stage-1 EMA values)
    assert restored.adapter.state_dict().keys() == {k[len("adapter."):] for k in s1_ck["ema"]
                                                    if k.startswith("adapter.")}
    assert os.listdir(s2_dir / "tb")
    # a random-init backbone exists only in checkpoints: stage 1 stores it and stage 2 starts from the same one
    assert torch.equal(s1_ck["model"]["vae.encoder.conv_in.weight"], restored.vae.encoder.conv_in.weight)
    assert "var.blocks.0.attn.mat_qkv.weight" in s1_ck["model"] or any(k.startswith("var.blocks.")
                                                                       for k in s1_ck["model"])
