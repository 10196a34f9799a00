"""Infinity's transformer: both passes against the naive official forward of infinity_reference, the strict loading
of the official key layout (``infinity_2b_reg.pth``), and the released size built on the meta device."""
import time

import infinity_reference as ref
import pytest
import torch

from varformer.backbone.infinity import Infinity, PaddedText, load_infinity
from varformer.backbone.infinity.load import official_infinity_buffers
from varformer.backbone.infinity.transformer import scale_index
from varformer.errors import CheckpointMismatchError

PN = (1, 2, 4)
SMALL = dict(depth=2, C=128, H=2, Ct5=128, chunks=2)


def small_sd(seed=0, **changes):
    kw = dict(SMALL, **changes)
    return ref.random_state_dict(ref.official_infinity_shapes(kw["depth"], kw["C"], kw["H"], kw["Ct5"],
                                                              kw["chunks"]), seed=seed, scale=0.05)


@pytest.fixture(scope="module")
def official():
    sd = small_sd()
    return sd, load_infinity(sd, patch_nums=PN)


def texts():
    g = torch.Generator().manual_seed(1)
    return [torch.randn(5, 128, generator=g), torch.randn(2, 128, generator=g)]


@pytest.mark.parametrize("long_input", [False, True])
def test_both_passes_match_the_naive_official_forward(official, long_input):
    sd, model = official
    L = sum(p * p for p in PN)
    x = torch.randn(2, L - 1 + (16 if long_input else 0), 32)
    with torch.no_grad():
        ours = model(PaddedText.from_list(texts()), x)
    assert ours.shape == (2, L, 64) and ours.dtype == torch.float32
    naive = ref.forward(sd, texts(), x, PN, SMALL["H"])
    assert torch.allclose(ours.double(), naive, atol=2e-4, rtol=1e-4), (ours.double() - naive).abs().max()


def test_teacher_pass_is_block_causal_and_the_long_pass_is_bidirectional(official):
    _, model = official
    text = PaddedText.from_list(texts())
    x = torch.randn(2, 20, 32)
    x2 = x.clone()
    x2[:, 4:] += 1.0                                          # change the last scale's input tokens (4x4)
    with torch.no_grad():
        a, b = model(text, x), model(text, x2)
        assert torch.equal(a[:, :5], b[:, :5]) and not torch.allclose(a[:, 5:], b[:, 5:])
        xl = torch.randn(2, 36, 32)
        xl2 = xl.clone()
        xl2[:, 20:] += 1.0                                    # change only the extra block of the long input
        assert not torch.allclose(model(text, xl)[:, :5], model(text, xl2)[:, :5])
    # the extra block has level index K (= 3 here, 10 at 512 px)
    assert scale_index(PN, True).tolist() == [0] + [1] * 4 + [2] * 16 + [3] * 16
    with pytest.raises(ValueError, match="input tokens"):
        model(text, torch.randn(2, 21, 32))


def test_batch_rows_equal_each_image_alone(official):
    _, model = official
    rows = texts()
    x = torch.randn(2, 36, 32)
    with torch.no_grad():
        both = model(PaddedText.from_list(rows), x)
        for i in range(2):
            assert torch.allclose(both[i:i + 1], model(PaddedText.from_list([rows[i]]), x[i:i + 1]), atol=1e-5)


def test_text_drop_replaces_rows_by_cfg_uncond_without_touching_the_input(official):
    _, model = official
    rows = texts()
    text = PaddedText.from_list(rows)
    before = text.features_BTC.clone()
    dropped = model.drop_text(text, torch.tensor([False, True]))
    assert torch.equal(text.features_BTC, before)
    assert torch.equal(dropped.features_BTC[0], before[0])
    assert torch.equal(dropped.features_BTC[1, :2], model.cfg_uncond[:2].detach())


def test_official_layout_loads_strictly_and_every_mismatch_is_one_line():
    sd = small_sd()
    extra = dict(sd, lvl_1L=torch.zeros(1, 21), attn_bias_for_masking=torch.zeros(1, 1, 21, 21),
                 cfg_uncond=torch.randn(600, 128))
    m = load_infinity(extra, patch_nums=PN)
    assert torch.equal(m.cfg_uncond.detach(), extra["cfg_uncond"][:512])     # trimmed as the official loader
    assert not any(t.is_meta for t in m.state_dict().values())
    flat = ref.random_state_dict(ref.official_infinity_shapes(2, 128, 2, 128, 1), scale=0.05)
    assert load_infinity(flat, patch_nums=PN).num_chunks == 1                 # blocks.{i} layout
    cases = {"missing": {k: v for k, v in sd.items() if k != "head.bias"},
             "shape": dict(sd, **{"block_chunks.1.module.0.ffn.fc1.bias": torch.zeros(3)}),
             "unexpected": dict(sd, extra_thing=torch.zeros(1)),
             "nonzero k bias": dict(sd, **{"block_chunks.0.module.0.sa.zero_k_bias": torch.ones(128)}),
             "lora": dict(sd, **{"block_chunks.0.module.0.sa.proj.lora_down.weight": torch.zeros(4, 128)}),
             "vae": {"encoder.conv_in.conv.weight": torch.zeros(1)}}
    expect = {"missing": "1 missing keys (head.bias)", "shape": "keys with other shapes",
              "unexpected": "1 unexpected keys (extra_thing)", "nonzero k bias": "is not zero",
              "lora": "LoRA-injected", "vae": "is a BSQ-VAE"}
    for name, bad in cases.items():
        with pytest.raises(CheckpointMismatchError) as e:
            load_infinity(bad, patch_nums=PN)
        assert expect[name] in str(e.value) and "\n" not in str(e.value), (name, str(e.value))


def test_released_size_builds_on_meta_with_the_official_parameter_count_and_keys():
    t = time.perf_counter()
    with torch.device("meta"):
        m = Infinity(depth=32, embed_dim=2048, num_heads=16, text_channels=2048, block_chunks=8)
    assert time.perf_counter() - t < 20
    assert sum(p.numel() for p in m.parameters()) == 2_204_564_032
    ours = {k: tuple(v.shape) for k, v in m.state_dict().items()}
    ours.update(official_infinity_buffers(m))
    assert ours == ref.official_infinity_shapes(32, 2048, 16, 2048, 8)
