"""The one precision policy: ``auto`` is bf16 only where the device computes bf16 natively (faked CPU flags here),
and every command, the trainer and the restorer use it by default."""
import pytest
import torch

from varformer import runtime
from varformer.config import load_config
from varformer.inference import model_restorer

AVX2_ONLY = {"avx512f": False, "avx512_bf16": False, "amx_bf16": False, "amx_tile": False}
AMX = {"avx512f": True, "avx512_bf16": True, "amx_bf16": True, "amx_tile": True}
CPU = torch.device("cpu")


def test_auto_is_fp32_on_an_avx2_only_cpu_and_bf16_with_native_bf16(monkeypatch):
    monkeypatch.setattr(runtime, "cpu_features", lambda: AVX2_ONLY)
    assert runtime.resolve_precision("auto", CPU) == "fp32"
    with pytest.warns(RuntimeWarning, match="4.6x slower than fp32"):
        assert runtime.resolve_precision("bf16", CPU) == "bf16"  # explicit: kept, with the expected slowdown
    assert model_restorer(torch.nn.Identity(), "cpu", "auto").precision == "fp32"
    monkeypatch.setattr(runtime, "cpu_features", lambda: AMX)
    assert runtime.resolve_precision("auto", CPU) == "bf16"
    assert model_restorer(torch.nn.Identity(), "cpu", "auto").precision == "bf16"


def test_the_trainer_resolves_auto_with_the_same_policy(monkeypatch, tmp_path):
    from varformer.training.distributed import DistInfo
    from varformer.training.trainer import Trainer
    from training.tiny_task import TinyPairs, TinyTask, tiny_config
    info = DistInfo(rank=0, world_size=1, local_rank=0, device=CPU)
    cfg = tiny_config(tmp_path, precision="auto")
    for flags, want in ((AVX2_ONLY, "fp32"), (AMX, "bf16")):
        monkeypatch.setattr(runtime, "cpu_features", lambda flags=flags: flags)
        assert Trainer(TinyTask(), TinyPairs(), cfg.train, cfg.data, info, str(tmp_path)).precision == want


def test_auto_is_the_default_everywhere():
    import argparse
    from varformer.commands import benchmark, evaluate, restore
    defaults = load_config(None)
    assert defaults.train.precision == "auto" and defaults.eval.precision == "auto"
    for recipe in ("stage1", "stage2"):
        assert load_config(f"configs/{recipe}.yaml").train.precision == "auto"
    for module, argv in ((restore, ["x", "-o", "y"]), (evaluate, []), (benchmark, ["train"])):
        p = argparse.ArgumentParser()
        module.add_arguments(p)
        assert p.parse_args(argv).precision in ("auto", None)  # evaluate: None = eval.precision (auto)
    p = argparse.ArgumentParser()
    benchmark.add_arguments(p)
    assert p.parse_args(["model"]).precision == ["fp32", "auto"]
