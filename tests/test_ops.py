"""varformer.ops: the oneDNN linear path runs (its operator seen by torch.profiler) and equals F.linear where it
applies, and is not taken where it would not be."""
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from varformer import ops
from varformer.perf.measure import count_flops

ONEDNN_OP = "mkldnn::_linear_pointwise"   # the operator ops.linear calls on its oneDNN path


def _ran(fn):
    """(fn's result, the names of the operators it ran), from torch.profiler."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        out = fn()
    return out, {e.name for e in prof.events()}


@pytest.fixture
def onednn_on():
    """The oneDNN path on (whatever VARFORMER_CPU_LINEAR says), or a skip naming a build without it."""
    previous = ops.use_onednn_linear(True)
    if not ops.use_onednn_linear(True):
        ops.use_onednn_linear(previous)
        pytest.skip("this torch build has no oneDNN linear (torch.ops.mkldnn._linear_pointwise)")
    yield
    ops.use_onednn_linear(previous)


@pytest.mark.parametrize("activation, reference", [
    (None, lambda y: y), ("gelu", F.gelu), ("gelu_tanh", lambda y: F.gelu(y, approximate="tanh"))])
def test_linear_equals_f_linear_with_the_activation(onednn_on, activation, reference):
    g = torch.Generator().manual_seed(0)
    x, w, b = torch.randn(2, 7, 24, generator=g), torch.randn(40, 24, generator=g), torch.randn(40, generator=g)
    want = reference(F.linear(x, w, b))
    with torch.no_grad():
        got, names = _ran(lambda: ops.linear(x, w, b, activation))
        got_no_bias, names_no_bias = _ran(lambda: ops.linear(x, w, None, activation))
    for ran in (names, names_no_bias):   # the oneDNN kernel computed it, activation included
        assert ONEDNN_OP in ran and not {"aten::linear", "aten::gelu"} & ran, sorted(ran)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got_no_bias, reference(F.linear(x, w)), rtol=1e-5, atol=1e-5)


def test_training_autocast_and_other_dtypes_run_f_linear_exactly(onednn_on):
    g = torch.Generator().manual_seed(1)
    x, w = torch.randn(5, 16, generator=g), torch.randn(8, 16, generator=g, requires_grad=True)
    y, ran = _ran(lambda: ops.linear(x, w, None, "gelu"))   # autograd on: F.linear, a graph to train through
    assert torch.equal(y, F.gelu(F.linear(x, w))) and y.requires_grad and ONEDNN_OP not in ran
    with torch.no_grad(), torch.autocast("cpu", torch.bfloat16):
        y, ran = _ran(lambda: ops.linear(x, w))
        assert y.dtype == torch.bfloat16 and ONEDNN_OP not in ran  # autocast casts the operands, as for F.linear
    with torch.no_grad():
        y, ran = _ran(lambda: ops.linear(x.double(), w.double()))
        assert y.dtype == torch.float64 and ONEDNN_OP not in ran
    with ops.aten_linear(), torch.no_grad():
        y, ran = _ran(lambda: ops.linear(x, w))
        assert torch.equal(y, F.linear(x, w)) and ONEDNN_OP not in ran and "aten::linear" in ran
    with torch.no_grad():                                   # and on again after the context
        assert ONEDNN_OP in _ran(lambda: ops.linear(x, w))[1]


def test_linear_module_keeps_nn_linear_keys_and_flops_are_counted():
    layer = ops.Linear(6, 10, activation="gelu")
    plain = torch.nn.Linear(6, 10)
    assert layer.state_dict().keys() == plain.state_dict().keys() and isinstance(layer, torch.nn.Linear)
    x = torch.randn(3, 6)
    with torch.inference_mode():
        assert count_flops(layer, x) == 2 * 3 * 6 * 10
    with pytest.raises(ValueError, match="activation"):
        ops.Linear(2, 2, activation="relu")


def test_keep_freed_memory_applies_on_linux_glibc():
    code = "from varformer.runtime import keep_freed_memory as k; print(k())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ("True" if sys.platform.startswith("linux") else "False")
    off = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"VARFORMER_MALLOC": "system", "PATH": ""}).stdout.strip()
    assert off == "False"
