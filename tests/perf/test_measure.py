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


def test_process_settings_restores_threads_tf32_and_the_random_state():
    from varformer.perf.measure import process_settings
    threads = torch.get_num_threads()
    tf32 = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    with pytest.raises(RuntimeError, match="inside"):
        with process_settings(threads=threads + 1, allow_tf32=not tf32[0]):
            assert torch.get_num_threads() == threads + 1
            assert torch.backends.cuda.matmul.allow_tf32 == (not tf32[0])
            torch.manual_seed(0)                 # a benchmark seeds its models
            raise RuntimeError("an error inside the benchmark")
    assert torch.get_num_threads() == threads
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == tf32
    assert torch.equal(torch.rand(3), expected)  # the caller's random stream goes on as if nothing ran
    with pytest.raises(ValueError, match="threads must be >= 1"):
        with process_settings(threads=0):
            pass


def test_flops_and_params_by_group_add_up():
    from varformer.perf.measure import flops_by_group, params_by_group
    net = torch.nn.Sequential()
    net.add_module("enc", torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Linear(16, 16)))
    net.add_module("dec", torch.nn.Linear(16, 4))
    net.add_module("head", torch.nn.Linear(4, 2))
    groups = (("encoder", ("enc",)), ("decoder", ("dec",)))
    total, by = flops_by_group(net, groups, "rest", torch.randn(3, 8))
    assert by == {"encoder": 2 * 3 * (8 * 16 + 16 * 16), "decoder": 2 * 3 * 16 * 4, "rest": 2 * 3 * 4 * 2}
    assert sum(by.values()) == total
    params = params_by_group(net, groups, "rest")
    assert params == {"encoder": 8 * 16 + 16 + 16 * 16 + 16, "decoder": 16 * 4 + 4, "rest": 4 * 2 + 2}
