"""RestoreVAR training on the shared trainer: the official optimiser groups and schedule, short runs of both stages
and of the decoder fine-tuning on the demo data (with resume), and the refiner gradients synchronised under DDP
(the release's stage 2 trains one unsynchronised copy per GPU)."""
import os
import socket

import pytest
import torch
from spawn_utils import spawn_and_wait
from restorevar_testutils import small_model
from torch.utils.data import Dataset

from varformer.config import load_config
from varformer.restorevar import load_restorevar
from varformer.training.optim import build_optimizer, build_scheduler, lin0_factor
from varformer.restorevar.task import RestoreVARTask, freeze_for_stage, official_param_groups

SMALL = ["method=restorevar", "model.depth=2", "model.vae_ch=32", "model.patch_nums=[1,2,3,4]", "model.refiner_depth=1",
         "model.refiner_dim=64", "model.refiner_heads=1", "model.refiner_mlp_dim=128",
         "data.resize_short=72", "data.crop_size=64", "data.batch_size=1", "train.device=cpu", "train.log_every=1"]


def test_lin0_schedule_and_official_adamw_groups():
    # flat warm-up (start 1), hold for 5 % of the rest, linear decay to 1 % at the last iteration
    f = [lin0_factor(i, 101, 0, 1.0, 0.01) for i in range(102)]
    assert f[0] == f[4] == 1.0 and abs(f[100] - 0.01) < 1e-12 and f[101] == f[100]
    assert abs(f[50] - (0.01 + 0.99 * 0.5 / 0.95)) < 1e-12
    assert lin0_factor(0, 100, 10, 0.005, 0.01) == 0.005 and lin0_factor(5, 100, 10, 0.005, 0.01) == 0.5025

    m = small_model()
    freeze_for_stage(m, 1)
    groups = official_param_groups(m, 0.05)
    names = {id(p): n for n, p in m.named_parameters()}
    decay = {names[id(p)] for p in groups[0]["params"]}
    no_decay = {names[id(p)] for p in groups[1]["params"]}
    assert "var.blocks.0.attn.mat_qkv.weight" in decay and "var.global_embed_gain" in decay   # 0-dim gains: decayed
    assert "var.blocks.1.cross_attn.gain" in decay and "var.class_emb.weight" in decay
    assert {"var.blocks.0.attn.scale_mul_1H11", "var.lvl_embed.weight", "var.lvl_embed_cond.weight",
            "var.head.bias", "var.blocks.0.attn.q_bias", "var.blocks.0.cross_attn.norm_q.weight"} <= no_decay
    assert not any(n.startswith(("vae.", "refiner.")) for n in decay | no_decay)
    cfg = load_config("restorevar_stage1.yaml")
    opt = build_optimizer(groups, cfg.train, torch.device("cpu"))
    assert isinstance(opt, torch.optim.AdamW) and opt.defaults["betas"] == (0.9, 0.95)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.05, 0.0]
    sched = build_scheduler(opt, cfg.train)
    assert opt.param_groups[0]["lr"] == 1e-4
    freeze_for_stage(m, 2)
    ref_groups = official_param_groups(m, 0.05)
    assert {names[id(p)] for p in ref_groups[1]["params"]} >= {"refiner.pos_embedding", "refiner.pos_embedding_cond"}
    del sched


def test_short_runs_of_both_stages_and_the_decoder_on_demo_data(tmp_path, capsys):
    from varformer.training.run import run_training
    s1 = tmp_path / "s1"
    cfg1 = load_config("demo_restorevar_stage1.yaml", SMALL + [f"train.output_dir={s1}", "train.total_iters=2",
                                                               "train.save_every=2"])
    r1 = run_training("stage1", cfg1, progress=False, print_config=False)
    assert r1.status == "finished" and os.path.isfile(s1 / "ckpt_00000002.pt")
    assert {"loss/token_ce", "loss/metric_token_acc"} <= set(r1.history[0])
    # resume: one more step from the step-2 checkpoint (AdamW groups and the lin0 schedule restored)
    cfg1b = load_config("demo_restorevar_stage1.yaml", SMALL + [f"train.output_dir={s1}", "train.total_iters=3",
                                                                "train.save_every=3"])
    r1b = run_training("stage1", cfg1b, progress=False, print_config=False)
    assert r1b.step == 3 and [h["step"] for h in r1b.history if "loss/total" in h] == [3]
    stage1 = load_restorevar(r1b.export)
    assert stage1.refiner is None

    s2 = tmp_path / "s2"
    cfg2 = load_config("demo_restorevar_stage2.yaml", SMALL + [
        f"train.output_dir={s2}", "train.total_iters=1", f"model.stage1_weights={r1b.export}",
        "train.val_every=1", "train.val_images=1"])
    r2 = run_training("stage2", cfg2, progress=False, print_config=False)
    assert r2.status == "finished" and "loss/refiner_l1" in r2.history[0]
    vals = [h for h in r2.history if "val/psnr" in h]
    assert vals and "val/refiner_l1" in vals[0]
    final = load_restorevar(r2.export, expect_refiner=True)
    for k, v in stage1.state_dict().items():                  # stage 2 changes nothing but the refiner
        assert torch.equal(final.state_dict()[k], v), k

    dec = tmp_path / "dec"
    cfg3 = load_config("restorevar_decoder.yaml", SMALL + [
        f"train.output_dir={dec}", "train.total_iters=1", "model.random_init_backbone=true",
        "data.root=demo:train", "data.tasks=[rain,haze]", "data.num_workers=0", "data.persistent_workers=false",
        "train.precision=fp32", "train.warmup_iters=0"])
    r3 = run_training("decoder", cfg3, progress=False, print_config=False)
    sd = torch.load(r3.export, weights_only=True)
    assert len(sd) == len(stage1.vae.state_dict()) and "decoder.conv_out.weight" in sd
    assert "NOT the authors' code" in capsys.readouterr().err


class _Pairs(Dataset):
    unbounded_ids = True

    def __len__(self):
        return 8

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(int(i))
        lq = torch.rand(3, 64, 64, generator=g)
        return {"lq": lq, "gt": (lq * 0.5 + 0.25)}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out_dir: str):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from varformer.training.distributed import cleanup_distributed, setup_distributed
    from varformer.training.trainer import Trainer
    info = setup_distributed("cpu")
    try:
        cfg = load_config(None, SMALL + [f"train.output_dir={out_dir}", "train.total_iters=1", "train.val_every=0",
                                         "train.image_every=0", "train.precision=fp32", "train.ema_decay=0.0",
                                         "data.num_workers=0", "train.optimizer=adamw"])
        model = small_model()
        freeze_for_stage(model, 2)
        task = RestoreVARTask(model, 2)
        with Trainer(task, _Pairs(), cfg.train, cfg.data, info, out_dir, progress=False) as t:
            batch = _Pairs()[rank]
            batch = {k: v[None] for k, v in batch.items()}
            # the release's call: the un-wrapped module, so DDP never averages the gradients
            model.refiner_loss(batch["lq"], batch["gt"]).backward()
            unsynced = [p.grad.clone() for p in model.refiner.parameters()]
            model.zero_grad(set_to_none=True)
            t.step_module(batch).loss.backward()                  # ours: through the DDP wrapper
            synced = [p.grad.clone() for p in model.refiner.parameters()]
        torch.save({"unsynced": unsynced, "synced": synced}, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        cleanup_distributed()


@pytest.mark.slow
def test_stage2_refiner_gradients_are_averaged_across_processes(tmp_path):
    spawn_and_wait(_worker, args=(2, _free_port(), str(tmp_path)))
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert not all(torch.allclose(a, b) for a, b in zip(r0["unsynced"], r1["unsynced"]))
    assert all(torch.allclose(a, b, atol=1e-7) for a, b in zip(r0["synced"], r1["synced"]))
    mean = [(a + b) / 2 for a, b in zip(r0["unsynced"], r1["unsynced"])]
    assert all(torch.allclose(a, m, atol=1e-6) for a, m in zip(r0["synced"], mean))


def test_stage_models_from_weight_files(tmp_path):
    """Stage 1 from a VAR file + the tokenizer file (the official start), stage 2 from the stage-1 file + the
    fine-tuned VQVAE file; a missing stage-1 source is a clear error."""
    from varformer.backbone import VAR, VQVAE
    from varformer.errors import ConfigError
    from varformer.restorevar import save_restorevar
    from varformer.restorevar.task import build_restorevar_model
    torch.manual_seed(0)
    vae = VQVAE(ch=32, patch_nums=(1, 2, 3, 4))
    var = VAR(vae, depth=2)
    torch.save(vae.state_dict(), tmp_path / "vae_ch160v4096z32.pth")
    torch.save(var.state_dict(), tmp_path / "var_d2.pth")
    cfg = load_config("restorevar_stage1.yaml", SMALL + [f"model.var_path={tmp_path / 'var_d2.pth'}",
                                                         f"model.vae_path={tmp_path / 'vae_ch160v4096z32.pth'}"])
    m1 = build_restorevar_model(cfg, 1, announce=lambda s: None)
    assert m1.refiner is None and abs(m1.var.blocks[1].drop_path.drop_prob - 0.1 * 2 / 24) < 1e-9
    assert torch.equal(m1.var.blocks[0].attn.mat_qkv.weight, var.blocks[0].attn.mat_qkv.weight)
    assert torch.equal(m1.vae.decoder.conv_out.weight, vae.decoder.conv_out.weight)
    save_restorevar(tmp_path / "s1.pt", m1)
    fine = {k: (v + 1 if k == "decoder.conv_out.bias" else v) for k, v in vae.state_dict().items()}
    torch.save(fine, tmp_path / "vae_restorevar.ckpt")
    cfg2 = load_config("restorevar_stage2.yaml", SMALL + [
        f"model.stage1_weights={tmp_path / 's1.pt'}", f"model.decoder_vae_path={tmp_path / 'vae_restorevar.ckpt'}"])
    m2 = build_restorevar_model(cfg2, 2, announce=lambda s: None)
    assert torch.equal(m2.var.head.weight, m1.var.head.weight)
    assert torch.equal(m2.vae.decoder.conv_out.bias, fine["decoder.conv_out.bias"])
    with pytest.raises(ConfigError, match="stage1_weights"):
        build_restorevar_model(load_config("restorevar_stage2.yaml", SMALL), 2, announce=lambda s: None)
