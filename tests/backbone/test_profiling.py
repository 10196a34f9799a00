import pytest
import torch

from varformer.profiling import count_flops, matmul_gflops, measure_peak_memory, time_fn


def test_count_flops_of_a_matmul_and_a_conv():
    a, b = torch.randn(16, 32), torch.randn(32, 8)
    assert count_flops(torch.mm, a, b) == 2 * 16 * 32 * 8
    conv = torch.nn.Conv2d(4, 6, 3, padding=1)
    assert count_flops(conv, torch.randn(1, 4, 10, 10)) == 2 * 6 * 4 * 9 * 100


def test_time_fn_median_and_arguments():
    calls = []
    assert time_fn(lambda: calls.append(1), warmup=2, repeat=3) >= 0
    assert len(calls) == 5
    with pytest.raises(ValueError):
        time_fn(lambda: None, repeat=0)


def test_matmul_gflops_positive():
    assert matmul_gflops('cpu', torch.float32, n=128, repeat=1) > 0


def test_peak_memory_sees_a_large_temporary():
    import gc
    size = 64 * 2 ** 20
    gc.collect()  # earlier tests' garbage freed now, not between the baseline and the measurement
    before = measure_peak_memory(lambda: None, 'cpu')

    def alloc():
        t = torch.ones(size // 4)
        return float(t[-1])
    peak = measure_peak_memory(alloc, 'cpu')
    assert peak - before >= 0.9 * size


def test_count_flops_includes_attention():
    q = k = v = torch.randn(1, 2, 16, 8)
    sdpa = torch.nn.functional.scaled_dot_product_attention
    assert count_flops(sdpa, q, k, v) == 2 * (2 * 2 * 16 * 8 * 16)
