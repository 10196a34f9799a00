"""FLOPs per 512x512 tile of the released VARestorer, counted on fake tensors from what its ``BenchmarkEntry``
gives a benchmark (the released settings, the forward's inputs): ~20.5 TFLOP, not the project page's 1,536 GFLOP
(docs/varestorer.md)."""
import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from varformer.perf.measure import count_flops_by_module
from varformer.varestorer.spec import SPEC


@pytest.mark.slow
def test_released_model_costs_about_20_5_tflop_per_tile():
    settings = SPEC.benchmark.released()
    with torch.device("meta"):
        model = SPEC.build(settings)
    model = model.to_empty(device="cpu").eval()    # the RoPE table is built in the fake mode too, as the benchmark does
    with FakeTensorMode(allow_non_fake_inputs=True):
        x, text = SPEC.benchmark.inputs(settings, 1, torch.device("cpu"))
        total, per_module = count_flops_by_module(model.forward, x, text)
    assert x.shape == (1, 3, 512, 512) and text[0].shape == (16, 2048)
    assert total == pytest.approx(20.474e12, rel=2e-3)
    parts = {k: v for k, v in per_module.items() if "." not in k and k != "Global"}
    assert set(parts) == {"SwinIR", "Encoder", "Infinity", "Decoder"} and sum(parts.values()) == total
    assert parts["Infinity"] == pytest.approx(16.79e12, rel=2e-3)     # the transformer alone: ~11x the page's figure
    assert total / 1536e9 > 13
