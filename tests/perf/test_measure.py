import subprocess
import sys

import pytest
import torch

from varformer.perf.measure import count_flops, matmul_gflops, time_fn


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
    """In a fresh process: in this one, memory freed by earlier tests may still be resident and be reused, so a
    new temporary need not raise the peak."""
    code = ("import torch; from varformer.perf.measure import measure_peak_memory as m; s = 64 * 2 ** 20; "
            "b = m(lambda: None, 'cpu'); p = m(lambda: float(torch.ones(s // 4)[-1]), 'cpu'); print(p - b, s)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    grew, size = int(out[0]), int(out[1])
    assert grew >= 0.9 * size


def test_count_flops_includes_attention():
    q = k = v = torch.randn(1, 2, 16, 8)
    sdpa = torch.nn.functional.scaled_dot_product_attention
    assert count_flops(sdpa, q, k, v) == 2 * (2 * 2 * 16 * 8 * 16)


def test_peak_tensor_bytes_counts_live_allocations_not_views_or_inplace():
    from varformer.perf.measure import peak_tensor_bytes
    mb = 2 ** 20
    w = torch.ones(mb // 4)  # exists before: its views and in-place updates allocate nothing

    def fn():
        a = torch.ones(mb // 4)          # 1 MiB
        v = a[:10]                       # view: nothing
        w.add_(1)                        # in place on an outside tensor: nothing
        w.view(-1, 4).t()                # view of an outside tensor: nothing
        del a                            # still alive through the view
        b = torch.ones(2 * mb // 4)      # 2 MiB -> 3 MiB live
        del v                            # frees a
        c = b * 2                        # 2 MiB -> 4 MiB live
        return c

    assert peak_tensor_bytes(fn) == 4 * mb
    assert peak_tensor_bytes(lambda: [torch.ones(mb // 4) for _ in range(3)]) == 3 * mb
    assert peak_tensor_bytes(lambda: [float(torch.ones(mb // 4).sum()) for _ in range(3)]) == mb + 4


def test_tensor_bytes_counts_shared_weights_once():
    from varformer.perf.measure import tensor_bytes
    lin = torch.nn.Linear(8, 4)
    tied = torch.nn.Linear(8, 4)
    tied.weight = lin.weight
    assert tensor_bytes([lin, tied]) == (32 + 4 + 4) * 4
