import os
import socket
import weakref

import torch
from spawn_utils import spawn_and_wait
import torch.distributed as dist
from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

from varformer.training import distributed
from varformer.training.distributed import cleanup_distributed, seed_everything, setup_distributed
from varformer.training.trainer import Trainer

from tiny_task import TinyPairs, TinyTask, tiny_config


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out_dir: str):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    info = setup_distributed("cpu")
    try:
        # global batch 4 on 2 processes with micro-batches of 1: two accumulated micro-batches per step, the
        # gradients all-reduced after the second only (no_sync on the first)
        cfg = tiny_config(out_dir, total_iters=4, save_every=2, log_every=2, global_batch_size=4)
        cfg.data.batch_size = 1
        seed_everything(cfg.train.seed, info.rank)  # different init per rank: DDP must broadcast rank 0's
        task = TinyTask()
        with Trainer(task, TinyPairs(), cfg.train, cfg.data, info, out_dir, progress=False) as t:
            bucketed = sum(p.numel() for p in t.step_module.parameters() if p.requires_grad)
            reduced = []

            def counting_allreduce(state, bucket):
                reduced.append(1)
                return allreduce_hook(state, bucket)

            t.step_module.register_comm_hook(None, counting_allreduce)
            res = t.fit()
            assert (t.batch.per_process, t.batch.accumulation) == (2, 2)
            ddp_params = t.step_module._get_ddp_logging_data().get("total_parameter_size_bytes")
            ddp = weakref.ref(t.step_module)
        # closed: the DDP wrapper (and its reducer, which holds the process group) is gone before the group is
        # destroyed, so the group is not destroyed through the reducer (see cleanup_distributed)
        assert ddp() is None
        torch.save({"state": t.model.state_dict(), "ema": t.ema.state_dict(), "bucketed": bucketed,
                    "samples": t.samples_seen, "allreduces": len(reduced), "ddp_params": ddp_params,
                    "status": res.status}, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        cleanup_distributed()


def test_two_process_gloo_ranks_end_identical(tmp_path):
    out = str(tmp_path)
    spawn_and_wait(_worker, args=(2, _free_port(), out))
    r0, r1 = (torch.load(os.path.join(out, f"rank{r}.pt"), weights_only=False) for r in (0, 1))
    assert r0["status"] == r1["status"] == "finished"
    assert r0["samples"] == r1["samples"] == 4 * 2  # 4 steps x 2 images per process
    assert r0["allreduces"] == 4  # one gradient all-reduce per step (one bucket), not one per micro-batch
    for k in r0["state"]:
        assert torch.equal(r0["state"][k], r1["state"][k]), k
    for k in r0["ema"]:
        assert torch.equal(r0["ema"][k], r1["ema"][k]), k
    # only the trainable head's parameters are in DDP's gradient buckets (the frozen stem is not)
    trainable_bytes = sum(v.numel() * 4 for k, v in r0["state"].items() if k.startswith("head."))
    assert r0["ddp_params"] == trainable_bytes
    # only rank 0 wrote checkpoints and TensorBoard logs
    files = sorted(os.listdir(out))
    assert "ckpt_00000004.pt" in files and "tb" in files
    assert len([f for f in files if f.startswith("ckpt_")]) == 2


def test_cleanup_destroys_the_gloo_backend_last_from_python(monkeypatch):
    """The backend must outlive the group's destruction and die when cleanup_distributed drops its own reference:
    torch 2.1 destroys a backend reached through the group with the GIL held, which hung a gloo run at exit."""
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1)
    backend = []
    alive_after_destroy = []
    real_destroy = dist.destroy_process_group

    def destroy():
        # pybind hands out the live wrapper cleanup_distributed holds (a fresh one, dying at once, if none is held)
        backend.append(weakref.ref(dist.group.WORLD._get_backend(torch.device("cpu"))))
        real_destroy()
        alive_after_destroy.append(backend[0]() is not None)

    monkeypatch.setattr(distributed.dist, "destroy_process_group", destroy)
    cleanup_distributed()
    assert alive_after_destroy == [True]
    assert backend[0]() is None and not dist.is_initialized()
