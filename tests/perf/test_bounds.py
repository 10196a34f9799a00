"""Part costs: FLOPs attributed to the innermost named range and to the dtype each op computes in, bytes counted
per op, and the bound they set at per-dtype matmul rates."""
import pytest
import torch
from torch.profiler import record_function

from varformer.perf.bounds import REST, PartCost, part_costs
from varformer.runtime import autocast


def _two_parts(x, w):
    with record_function("outer"):
        y = x @ w                                    # float32: 2 * 8 * 16 * 32 FLOPs
        with record_function("inner"), autocast(x.device, "bf16"):
            z = torch.nn.functional.linear(y, w)  # bf16 under autocast: 2 * 8 * 32 * 16
    return (z.float() + 1).sum()                     # elementwise, outside both: bytes only


def test_flops_go_to_the_innermost_range_and_to_their_dtype():
    x, w = torch.randn(8, 16), torch.randn(16, 32)
    costs = part_costs(lambda: _two_parts(x, w), ["outer", "inner"])
    assert costs["outer"].flops_by_dtype == {torch.float32: 2 * 8 * 16 * 32}
    assert costs["inner"].flops_by_dtype == {torch.bfloat16: 2 * 8 * 32 * 16}
    assert costs[REST].flops == 0 and costs[REST].bytes > 0
    # bytes: at least the operands and the result of the product
    assert costs["outer"].bytes >= (8 * 16 + 16 * 32 + 8 * 32) * 4


def test_bound_holds_each_dtype_to_its_rate():
    c = PartCost({torch.float32: 100, torch.bfloat16: 300}, bytes=50)
    rates = {torch.float32: 10.0, torch.bfloat16: 100.0}
    assert c.compute_s(rates) == pytest.approx(100 / 10 + 300 / 100)
    assert c.bound_s(rates, bytes_per_s=1.0) == pytest.approx(50.0)  # memory-bound at 1 B/s
    assert c.bound_s(rates, bytes_per_s=1e6) == pytest.approx(13.0)
    # a dtype without a measured rate counts at the slowest one given
    assert PartCost({torch.float16: 20}).compute_s(rates) == pytest.approx(2.0)
