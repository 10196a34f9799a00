"""The BSQ-VAE: the official key layout (both forms the official loader takes) loads strictly, the encoder and
decoder are the flux-style stacks written out here, and batch rows do not depend on each other."""
import infinity_reference as ref
import pytest
import torch
import torch.nn.functional as F

from varformer.backbone.infinity import BSQVAE, load_bsq_vae
from varformer.errors import CheckpointMismatchError

SMALL = dict(base_ch=32, ch_mult=(1, 2, 2, 2, 2), num_res_blocks=1, z_channels=32)


def random_vae_sd(seed=0):
    g = torch.Generator().manual_seed(seed)
    shapes = ref.official_vae_shapes(SMALL["base_ch"], SMALL["ch_mult"], SMALL["num_res_blocks"])
    return {k: (1 + 0.1 * torch.randn(v, generator=g)) if ".norm.weight" in k else 0.1 * torch.randn(v, generator=g)
            for k, v in shapes.items()}


def plain(sd):
    """The plain nn.Conv2d / GroupNorm key form (what ``load_cnn`` maps onto the Conv/Normalize wrappers)."""
    return {k.replace(".conv.weight", ".weight").replace(".conv.bias", ".bias").replace(".norm.weight", ".weight")
            .replace(".norm.bias", ".bias"): v for k, v in sd.items()}


def naive_encoder(sd, x, nres=1, levels=5):
    def conv(p, h, stride=1, pad=1):
        return F.conv2d(h, sd[p + ".conv.weight"], sd[p + ".conv.bias"], stride=stride, padding=pad)

    def gn(p, h):
        return F.group_norm(h, 32, sd[p + ".norm.weight"], sd[p + ".norm.bias"], eps=1e-6)

    def res(p, h):
        r = conv(p + ".conv2", F.silu(gn(p + ".norm2", conv(p + ".conv1", F.silu(gn(p + ".norm1", h))))))
        return (conv(p + ".nin_shortcut", h, pad=0) if p + ".nin_shortcut.conv.weight" in sd else h) + r

    h = conv("encoder.conv_in", x)
    for i in range(levels):
        for j in range(nres):
            h = res(f"encoder.down.{i}.block.{j}", h)
        if i < levels - 1:
            h = conv(f"encoder.down.{i}.downsample.conv", F.pad(h, (0, 1, 0, 1)), stride=2, pad=0)
    h = res("encoder.mid.block_2", res("encoder.mid.block_1", h))
    return conv("encoder.conv_out", F.silu(gn("encoder.norm_out", h)))


def test_both_official_key_forms_load_strictly_and_encode_as_written_out():
    sd = random_vae_sd()
    mask = 2 ** torch.arange(31, -1, -1)
    vae = load_bsq_vae({"vae": dict(sd, **{"quantizer.lfq.mask": mask}), "ema": {}})
    same = load_bsq_vae(plain(sd))
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        h = vae.encode(x)
        assert h.shape == (2, 32, 4, 4)
        assert torch.allclose(h, naive_encoder(sd, x), atol=1e-5)
        assert torch.equal(same.encode(x), h)
        img = vae.decode(h * 20)
    assert img.shape == (2, 3, 64, 64) and img.min() >= -1 and img.max() <= 1


def test_mismatches_are_one_line_errors():
    sd = random_vae_sd()
    bad = {"missing": ({k: v for k, v in sd.items() if "decoder.up.0.block.1.conv2" not in k}, "2 missing keys"),
           "shape": (dict(sd, **{"decoder.conv_in.conv.bias": torch.zeros(5)}), "keys with other shapes"),
           "mask": (dict(sd, **{"quantizer.lfq.mask": torch.arange(32)}), "powers of two"),
           "other": (dict(sd, **{"quantizer.codebook": torch.zeros(2)}), "outside the encoder/decoder"),
           "not a vae": ({"pos_start": torch.zeros(1)}, "not a BSQ-VAE")}
    for name, (d, msg) in bad.items():
        with pytest.raises(CheckpointMismatchError) as e:
            load_bsq_vae(d)
        assert msg in str(e.value) and "\n" not in str(e.value), (name, str(e.value))


def test_released_size_and_key_layout():
    with torch.device("meta"):
        vae = BSQVAE()
    shapes = ref.official_vae_shapes(128, (1, 2, 4, 4, 4), 2)
    assert {k: tuple(v.shape) for k, v in vae.state_dict().items()} == shapes
    assert sum(p.numel() for p in vae.encoder.parameters()) == 45_025_696
    assert sum(p.numel() for p in vae.decoder.parameters()) == 65_092_355


def test_batch_rows_do_not_depend_on_each_other_even_for_channels_last_input():
    # equal to float32 rounding: the convolution kernels themselves differ between batch sizes
    vae = load_bsq_vae(random_vae_sd())
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        both = vae.encode(x.contiguous(memory_format=torch.channels_last))
        for i in range(2):
            assert torch.allclose(both[i:i + 1], vae.encode(x[i:i + 1].contiguous()), atol=2e-5)
        z = torch.randn(2, 32, 4, 4)
        dec = vae.decode(z.contiguous(memory_format=torch.channels_last))
        assert torch.allclose(dec[1:], vae.decode(z[1:]), atol=2e-5)
