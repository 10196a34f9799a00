import os
import warnings

import pytest
import torch

from varformer.training import checkpoint as ckpt_io
from varformer.training.distributed import DistInfo, seed_everything
from varformer.training.trainer import Trainer, TrainingDivergedError

from tiny_task import TinyPairs, TinyTask, tiny_config

CPU = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))


def _trainer(cfg, dataset=None, task=None):
    seed_everything(cfg.train.seed, 0)
    task = task or TinyTask()
    t = Trainer(task, dataset or TinyPairs(), cfg.train, cfg.data, CPU, cfg.train.output_dir, progress=False)
    task.trainer = t
    return t


def _snapshot(t):
    return {"model": {k: v.clone() for k, v in t.model.state_dict().items()}, "ema": t.ema.state_dict(),
            "opt": t.optimizer.state_dict(), "lr": t.optimizer.param_groups[0]["lr"]}


def _assert_bit_identical(a, b):
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for k in a["ema"]:
        assert torch.equal(a["ema"][k], b["ema"][k]), k
    for i, st in a["opt"]["state"].items():
        for k, v in st.items():
            assert torch.equal(v, b["opt"]["state"][i][k]), (i, k)
    assert a["lr"] == b["lr"]


def test_resume_is_bit_identical(tmp_path):
    # 12 images, batch 2 -> 6 batches/epoch; 2K = 8 steps crosses an epoch boundary and both LR milestones.
    straight = _trainer(tiny_config(tmp_path / "a", total_iters=8, save_every=4))
    res = straight.fit()
    assert res.status == "finished" and res.step == 8
    ref = _snapshot(straight)

    first = _trainer(tiny_config(tmp_path / "b", total_iters=4, save_every=4))
    first.fit()
    del first  # the "killed" process: only the checkpoint on disk survives
    torch.manual_seed(12345)  # a new process starts with other RNG states
    second = _trainer(tiny_config(tmp_path / "b", total_iters=8, save_every=4))
    res = second.fit()
    assert res.step == 8
    _assert_bit_identical(ref, _snapshot(second))


def test_checkpoint_holds_only_trainable_params_and_keeps_last_k(tmp_path):
    t = _trainer(tiny_config(tmp_path, total_iters=6, save_every=1, keep_last=2))
    t.fit()
    kept = ckpt_io.list_checkpoints(str(tmp_path))
    assert [s for s, _ in kept] == [5, 6]
    ck = torch.load(kept[-1][1], weights_only=False)
    assert not any(k.startswith("stem.") for k in ck["model"])
    assert "scale" in ck["model"] and "head.0.weight" in ck["model"]
    assert set(ck["ema"]) == {n for n, p in t.model.named_parameters() if p.requires_grad}
    assert {"python", "numpy", "torch"} <= set(ck["rng"][0])
    assert not [f for f in os.listdir(tmp_path) if ".tmp" in f]


def test_resume_auto_skips_truncated_checkpoint_with_warning(tmp_path):
    t = _trainer(tiny_config(tmp_path, total_iters=6, save_every=3))
    t.fit()
    latest = os.path.join(tmp_path, ckpt_io.checkpoint_name(6))
    data = open(latest, "rb").read()
    with open(latest, "wb") as fh:
        fh.write(data[: len(data) // 2])
    with pytest.warns(RuntimeWarning, match="skipping unreadable checkpoint .*ckpt_00000006"):
        path, ck = ckpt_io.find_resume_checkpoint("auto", str(tmp_path))
    assert path.endswith(ckpt_io.checkpoint_name(3)) and ck["step"] == 3
    t2 = _trainer(tiny_config(tmp_path, total_iters=6, save_every=3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        assert t2.fit().step == 6


def test_atomic_save_never_leaves_a_partial_file(tmp_path, monkeypatch):
    path = str(tmp_path / "ckpt_00000001.pt")
    ckpt_io.atomic_torch_save({"step": 1, "model": {"w": torch.ones(3)}}, path)

    def broken_save(obj, fh):
        fh.write(b"PK\x03\x04 half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        ckpt_io.atomic_torch_save({"step": 2, "model": {}}, path)
    monkeypatch.undo()
    assert torch.equal(torch.load(path)["model"]["w"], torch.ones(3))  # the old file is untouched
    assert os.listdir(tmp_path) == ["ckpt_00000001.pt"]


def test_nan_loss_stops_with_step_and_names_and_keeps_last_good_checkpoint(tmp_path):
    ds = TinyPairs(nan_index=5)
    cfg = tiny_config(tmp_path, total_iters=12, save_every=2, log_every=4)
    t = _trainer(cfg, dataset=ds)
    with pytest.raises(TrainingDivergedError) as e:
        t.fit()
    msg = str(e.value)
    assert "img_005.png" in msg and "step" in msg
    steps = [s for s, _ in ckpt_io.list_checkpoints(str(tmp_path))]
    bad_step = int(msg.split("step ")[1].split(",")[0])
    assert all(s < bad_step for s in steps) and steps  # nothing saved at or after the bad step
    ck = torch.load(os.path.join(tmp_path, ckpt_io.checkpoint_name(steps[-1])), weights_only=False)
    assert all(torch.isfinite(v).all() for v in ck["model"].values())


def test_ctrl_c_saves_a_checkpoint_and_stops(tmp_path):
    task = TinyTask(interrupt_at=3)
    t = _trainer(tiny_config(tmp_path, total_iters=50, save_every=100), task=task)
    res = t.fit()
    assert res.status == "interrupted" and res.step == 3
    assert [s for s, _ in ckpt_io.list_checkpoints(str(tmp_path))] == [3]


def test_a_closed_trainer_refuses_to_train_again(tmp_path):
    with _trainer(tiny_config(tmp_path, total_iters=2, save_every=0)) as t:
        assert t.fit().status == "finished"
    assert t.step_module is None
    with pytest.raises(RuntimeError, match="closed"):
        t.fit()


def test_history_logs_terms_lr_and_speed(tmp_path):
    res = _trainer(tiny_config(tmp_path, total_iters=4, save_every=0, log_every=2)).fit()
    logs = [h for h in res.history if "loss/mse" in h]
    assert [h["step"] for h in logs] == [2, 4]
    assert all(h["speed/images_per_s"] > 0 and "grad_norm" in h and "lr" in h for h in logs)
    assert os.listdir(os.path.join(tmp_path, "tb"))


def test_config_errors(tmp_path):
    from varformer.errors import ConfigError
    with pytest.raises(ConfigError, match="precision"):
        _trainer(tiny_config(tmp_path, precision="fp16"))
    with pytest.raises(ConfigError, match="batch_size"):
        cfg = tiny_config(tmp_path)
        cfg.data.batch_size = 64
        _trainer(cfg)
    with pytest.raises(ConfigError, match="resume"):
        _trainer(tiny_config(tmp_path, resume=str(tmp_path / "missing.pt"))).fit()


def test_bf16_autocast_path_trains(tmp_path):
    res = _trainer(tiny_config(tmp_path, total_iters=3, precision="bf16", save_every=0)).fit()
    assert res.status == "finished"
    assert all(torch.isfinite(torch.tensor(h["loss/mse"])) for h in res.history if "loss/mse" in h)


class TwoGroupTask(TinyTask):
    """A task that gives one parameter its own learning rate, as VarFormer's gives its blend weight."""

    def __init__(self, scale: float):
        super().__init__()
        self.scale = scale

    def parameter_groups(self):
        bias = self.model.head[0].bias
        if self.scale == 1:
            return super().parameter_groups()
        rest = [p for p in self.model.parameters() if p.requires_grad and p is not bias]
        return [{"name": "model", "params": rest}, {"name": "bias", "params": [bias], "lr_scale": self.scale}]


def test_parameter_groups_come_from_the_task(tmp_path):
    from varformer.errors import ConfigError
    from varformer.training.trainer import build_optimizer
    cfg = tiny_config(tmp_path, total_iters=1)
    net = torch.nn.Linear(4, 4)
    gate = torch.nn.Parameter(torch.tensor(1.0))
    groups = [{"name": "net", "params": list(net.parameters())}, {"name": "gate", "params": [gate], "lr_scale": 10}]
    opt = build_optimizer(groups, cfg.train, torch.device("cpu"))
    assert [g["lr"] for g in opt.param_groups] == [cfg.train.lr, 10 * cfg.train.lr]
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[1], gamma=0.5)
    params = list(net.parameters()) + [gate]
    before = [p.detach().clone() for p in params]
    (net(torch.ones(1, 4)).sum() * gate).backward()
    opt.step()  # Adam's first step moves every parameter by about its lr
    steps = [float((p.detach() - b).abs().max()) for p, b in zip(params, before)]
    assert steps[-1] == pytest.approx(10 * cfg.train.lr, rel=1e-3)
    assert steps[0] == pytest.approx(cfg.train.lr, rel=1e-3)
    sched.step()
    assert [g["lr"] for g in opt.param_groups] == [cfg.train.lr / 2, 5 * cfg.train.lr]
    groups[1]["lr_scale"] = 0.0
    with pytest.raises(ConfigError, match="lr_scale must be > 0"):
        build_optimizer(groups, cfg.train, torch.device("cpu"))
    t = _trainer(cfg, task=TwoGroupTask(3.0))
    assert [g["name"] for g in t.optimizer.param_groups] == ["model", "bias"]


def test_resume_refuses_other_parameter_groups(tmp_path):
    from varformer.errors import CheckpointMismatchError
    first = _trainer(tiny_config(tmp_path, total_iters=2, save_every=2), task=TwoGroupTask(1.0))
    first.fit()
    assert len(first.optimizer.param_groups) == 1
    again = _trainer(tiny_config(tmp_path, total_iters=4, save_every=2), task=TwoGroupTask(5.0))
    with pytest.raises(CheckpointMismatchError, match=r"parameter groups \['model'\], this run has \['model', 'bias'\]"):
        again.fit()


class BlowUpTask(TinyTask):
    """At one step the loss stays finite but its gradient is NaN (0 x d sqrt(x)/dx at x = 0): the update, not the
    loss, makes the weights non-finite, as a too-large learning rate does."""

    def __init__(self, at: int):
        super().__init__()
        self.at = at

    def forward(self, batch):
        out = super().forward(batch)
        if self.calls == self.at:
            w = self.model.head[0].weight
            out.loss = out.loss + 0.0 * torch.sqrt(w - w.detach()).sum()
        return out


def test_non_finite_weights_are_caught_before_a_checkpoint_is_written(tmp_path):
    t = _trainer(tiny_config(tmp_path, total_iters=6, save_every=1, log_every=4), task=BlowUpTask(at=2))
    with pytest.raises(TrainingDivergedError) as e:
        t.fit()
    msg = str(e.value)
    good = os.path.join(tmp_path, ckpt_io.checkpoint_name(1))
    assert "weights became NaN/inf by step 2" in msg and "although the loss was finite" in msg
    assert f"Last good checkpoint: {good} (its weights were checked finite" in msg
    assert [s for s, _ in ckpt_io.list_checkpoints(str(tmp_path))] == [1]
    ck = torch.load(good, weights_only=True)
    assert ck["weights_finite"] is True
    assert all(torch.isfinite(v).all() for part in ("model", "ema") for v in ck[part].values())
