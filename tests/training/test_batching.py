"""train.global_batch_size: the per-process batch from the world size, micro-batches with gradient accumulation,
and an update equal to the one of the whole batch at once."""
import pytest
import torch

from varformer.errors import ConfigError
from varformer.methods import registry
from varformer.training.batching import plan_batches
from varformer.training.distributed import DistInfo, seed_everything
from varformer.training.trainer import Trainer

from tiny_task import TinyPairs, TinyTask, tiny_config

CPU = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))


def test_batch_plans_keep_the_global_batch():
    official2 = plan_batches(64, 16, 4)
    assert (official2.per_process, official2.micro_batch, official2.accumulation) == (16, 16, 1)
    one_gpu = plan_batches(64, 16, 1)
    assert (one_gpu.per_process, one_gpu.micro_batch, one_gpu.accumulation, one_gpu.global_batch) == (64, 16, 4, 64)
    odd = plan_batches(16, 6, 1)  # 6 does not divide 16: 4 micro-batches of 4, never 18 images
    assert (odd.micro_batch, odd.accumulation, odd.global_batch) == (4, 4, 16)
    varformer, restorevar = registry.get("varformer"), registry.get("restorevar")
    stage1, stage2 = varformer.stage("stage1"), varformer.stage("stage2")
    assert plan_batches(8, 4, 2).notes(stage1, 1e-4) == []
    uneven = plan_batches(8, 4, 3)
    assert uneven.global_batch == 9 and "does not divide among 3 processes" in uneven.notes(stage1, 1e-4)[0]
    legacy = plan_batches(0, 16, 1)  # global batch not set: data.batch_size per process, as before
    assert legacy.global_batch == 16 and "differs from the official stage2 run's 64" in legacy.notes(stage2, 1e-4)[0]
    assert legacy.notes(stage2, 1e-4, applies=False) == []
    # RestoreVAR's release scales its lr with the batch (tblr x batch / 256): the note says what its rule gives
    one_gpu_rv = plan_batches(0, 24, 1).notes(restorevar.stage("stage1"), 1e-4)
    assert "official stage1 run's 48" in one_gpu_rv[0] and "lr 0.0001 x 24/48 = 5e-05" in one_gpu_rv[0]
    with pytest.raises(ConfigError, match="data.batch_size must be >= 1"):
        plan_batches(8, 0, 1)


def _one_step(out_dir, batch_size, global_batch_size):
    seed_everything(3)
    task = TinyTask()
    task.model.head[2].p = 0.0  # no dropout: the micro-batches and the whole batch compute the same function
    cfg = tiny_config(out_dir, total_iters=1, save_every=1, global_batch_size=global_batch_size)
    cfg.data.batch_size = batch_size
    t = Trainer(task, TinyPairs(), cfg.train, cfg.data, CPU, cfg.train.output_dir, progress=False)
    t.fit()
    return t


def test_accumulated_micro_batches_make_the_update_of_the_whole_batch(tmp_path):
    whole = _one_step(tmp_path / "a", batch_size=2, global_batch_size=0)
    accumulated = _one_step(tmp_path / "b", batch_size=1, global_batch_size=2)
    assert (whole.batch.accumulation, accumulated.batch.accumulation, accumulated.batch.micro_batch) == (1, 2, 1)
    assert whole.samples_seen == accumulated.samples_seen == 2  # exact resume counts samples, not batches
    ref, got = whole.model.state_dict(), accumulated.model.state_dict()
    seed_everything(3)
    init = TinyTask().model.state_dict()
    assert any(not torch.equal(init[k], ref[k]) for k in ref)  # it trained
    # the same gradient (Adam's first step hides a scale, the gradient norm does not) and the same logged loss
    (w_log,), (a_log,) = ([h for h in t.history if "grad_norm" in h] for t in (whole, accumulated))
    assert a_log["grad_norm"] == pytest.approx(w_log["grad_norm"], rel=1e-5)
    assert a_log["loss/mse"] == pytest.approx(w_log["loss/mse"], rel=1e-5)
    for k in ref:
        assert torch.allclose(ref[k], got[k], atol=1e-6), k
    assert torch.load(accumulated.last_checkpoint, weights_only=True)["batch"]["accumulation"] == 2
