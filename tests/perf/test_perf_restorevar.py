"""RestoreVAR's benchmark at a reduced size: FLOPs by part, latency, memory, part shares, and the table beside a
VarFormer result."""
from types import SimpleNamespace

from varformer.perf.measure import Timing
from varformer.perf.restorevar import (RestoreVARBenchmarkOptions, flops_without_compute, format_comparison,
                                       format_restorevar_table, run_restorevar_benchmark)
from varformer.restorevar import RestoreVARSettings


def test_restorevar_benchmark_small_and_beside_varformer():
    opts = RestoreVARBenchmarkOptions(depth=2, vae_ch=32, patch_nums=(1, 2, 3, 4), refiner_depth=1, device="cpu",
                                      precisions=("fp32",), warmup=0, repeat=1)
    r = run_restorevar_benchmark(opts)
    assert r.image_size == 64 and r.flops_per_image > 0 and r.results[0].b1.wall_s > 0
    assert sum(r.flops_parts.values()) == r.flops_per_image and min(r.flops_parts.values()) > 0
    assert r.results[0].tensor_peak_bytes > 0 and abs(sum(r.results[0].part_shares.values()) - 1) < 1e-6
    assert r.params["total"] == r.params["transformer"] + r.params["refiner"] + r.params["vqvae"]
    table = format_restorevar_table(r)
    assert "VQVAE decoder" in table and "latent refiner" in table
    vf = SimpleNamespace(config={"depth": 2, "vae_ch": 32}, params=10**7, flops_per_image=10**11,
                         results=[SimpleNamespace(precision="fp32", b1=Timing(2.0, 3.0, None))],
                         tensor_peaks={"fp32": 2**30})
    both = format_comparison(vf, r, ("fp32",))
    assert "| VarFormer 2/32 | fp32 | 256x256 |" in both and "900.0 (9 tiles) | 18.00 |" in both
    assert "| RestoreVAR 2/32 | fp32 | 64x64 |" in both


def test_flops_of_a_small_model_split_by_part():
    f = flops_without_compute(RestoreVARSettings(depth=2, vae_ch=32, patch_nums=[1, 2, 3, 4], refiner_depth=0))
    assert f["flops_refiner"] == 0 and f["refiner"] == 0 and f["flops"] == sum(
        v for k, v in f.items() if k.startswith("flops_"))
