"""``varformer benchmark model`` pieces on a small random-init VarFormer (timings are reported, never asserted)."""
import pytest
import torch

from varformer.cli import main
from varformer.inference import model_restorer
from varformer.model import VarFormer
from varformer.perf.measure import Machine, Timing, interleaved_timings
from varformer.perf.model import (PARTS, ModelBenchmark, ModelBenchmarkOptions, PrecisionResult, part_shares,
                                  run_model_benchmark)
from varformer.perf.reference import official_style_forward
from varformer.perf.report import format_model_table
from varformer.runtime import cpu_features


@pytest.fixture(scope="module")
def small_model():
    torch.manual_seed(0)
    return VarFormer(depth=2, vae_ch=32, n_cross=1).eval()


def test_official_style_reference_gives_the_model_output_and_parts_are_timed(small_model):
    x = torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    restorer = model_restorer(small_model, "cpu", "fp32")
    ours = restorer(x)
    ref = official_style_forward(small_model, x)
    # the model skips work (dead decoder level, duplicated CFG rows): results must stay identical
    assert torch.allclose(ours, ref, atol=1e-5), (ours - ref).abs().max()
    # parts are read from the model's record_function ranges: nothing of the model is replaced
    forward_before = type(small_model).forward
    shares = part_shares(restorer, x)
    assert set(shares) == set(PARTS) and abs(sum(shares.values()) - 1) < 1e-6
    assert all(v > 0 for k, v in shares.items() if k != PARTS[-1])
    assert type(small_model).forward is forward_before and not small_model.unet_encoder._forward_hooks


def test_interleaved_timings_alternate_and_report():
    order = []
    t = interleaved_timings({"a": lambda: order.append("a"), "b": lambda: order.append("b")},
                            torch.device("cpu"), warmup=1, repeat=2, with_memory=True)
    assert order == ["a", "b"] * 3
    assert t["a"].peak_mem_bytes > 0 and t["b"].wall_s >= 0


def test_table_and_cli_options(capsys):
    machine = Machine(device="cpu", device_name="x86_64", threads=2, load_average=1.0, cpu_flags=cpu_features())
    res = ModelBenchmark(config={"depth": 2}, machine=machine, weights_note="random weights", params=10,
                         flops_per_image=10 ** 11,
                         model_memory_bytes=2 ** 28, batch=4,
                         results=[PrecisionResult("fp32", Timing(2.0, 4.0, 2 ** 30), 0.6, 3.0, 50.0, 25.0,
                                                  {p: 1 / len(PARTS) for p in PARTS})],
                         reference={"b1": Timing(3.0, 6.0, 2 ** 31), "flops_per_image": 1.1e11,
                                    "max_abs_diff_vs_model_fp32": 0.0},
                         tensor_peaks={"fp32": 2 ** 29, "reference": 2 ** 30})
    table = format_model_table(res)
    assert "| fp32 | 2.000 | 4.000 | 0.600 | 3.000 | 0.50 GiB | 1.00 GiB | 50.0 / 25.0 | 50.0 / 25.0 |" in table
    assert "| official-style ref. (fp32) | 3.000 | 6.000 | - | - | 1.00 GiB | 2.00 GiB |" in table
    assert "wall 1.50x, CPU time 1.50x" in table and "10.0% more" in table
    with pytest.raises(SystemExit):
        main(["benchmark", "model", "--image", "4kx2k"])
    assert "expected HxW" in capsys.readouterr().err


def test_bf16_is_timed_as_restore_runs_it_beside_a_float32_reference():
    """bf16 alone: a bf16-held, channels-last model (restore's path) is timed, and the official-style reference
    still runs on the float32 model it was copied from; memory is reported per model."""
    r = run_model_benchmark(ModelBenchmarkOptions(depth=2, vae_ch=32, n_cross=1, device="cpu", precisions=("bf16",),
                                                  batch=1, warmup=0, repeat=1))
    assert [p.precision for p in r.results] == ["bf16"] and r.reference is not None
    assert "channels-last" in r.weights_note
    assert set(r.tensor_peaks) == {"bf16", "reference"}
    # the bf16-held model is lighter than the float32 one the reference runs
    assert r.tensor_peaks["bf16"] < r.tensor_peaks["reference"]
    with pytest.raises(ValueError, match="fp32 bf16"):
        run_model_benchmark(ModelBenchmarkOptions(depth=2, vae_ch=32, precisions=("bf16",), bf16_check=True))
