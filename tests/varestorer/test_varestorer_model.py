"""The assembled VARestorer on the reduced model: every intermediate against its definition (the naive official
transformer with LoRA folded in by W + up @ down and without the blocks' value bias, D2), the release's random draws
reproduced by hand, seeded runs, batch independence, the text-drop option (D1) and input errors."""
import infinity_reference as ref
import pytest
import torch
from varestorer_testutils import PN, SIZE, images, merged_reference_sd, texts

from varformer.backbone.infinity import residual_pyramid, summed_codes
from varformer.backbone.infinity.bit_sampling import split_scales
from varformer.runtime import autocast
from varformer.varestorer import VARestorer, VARestorerInputError


@pytest.fixture(scope="module")
def outputs(model):
    torch.manual_seed(7)
    return model.sample_outputs(images(), texts())


def test_intermediates_are_the_pipeline_of_the_release(model, files, outputs):
    so = outputs
    lq = images()
    with torch.no_grad():
        assert torch.allclose(so.cleaned, model.swinir(lq))
        assert torch.equal(so.lq_latent, model.vae.encode(so.cleaned * 2 - 1))
        assert torch.equal(so.pyramid, residual_pyramid(so.lq_latent, PN, long_input=True)[0])
        assert torch.allclose(so.image, (model.vae.decode(summed_codes(so.bits, PN)) + 1) / 2)
    assert so.cleaned.shape == (2, 3, SIZE, SIZE) and so.lq_latent.shape == (2, 32, 8, 8)
    assert so.pyramid.shape == (2, 120 + 64, 32) and so.logits.shape == (2, 121, 64)
    assert [tuple(b.shape) for b in so.bits] == [(2, p, p, 32) for p in PN]
    assert all(set(b.unique().tolist()) <= {0.0, 1.0} for b in so.bits)
    assert so.image.min() >= 0 and so.image.max() <= 1


def test_logits_are_the_official_forward_with_lora_folded_in_and_no_block_value_bias(model, files, outputs):
    sd = merged_reference_sd(files[0])
    naive = ref.forward(sd, texts(), outputs.pyramid, PN, 2, value_bias_in_blocks=False)
    assert torch.allclose(outputs.logits.double(), naive, atol=2e-4, rtol=1e-4)
    # D2 is visible: with the blocks' value bias the logits differ (the pooled text keeps its bias in both)
    with_bias = ref.forward(sd, texts(), outputs.pyramid, PN, 2, value_bias_in_blocks=True)
    assert not torch.allclose(with_bias, naive, atol=1e-3)


def test_bits_are_the_releases_draws_one_rand_per_scale_on_the_cpu_generator(model, outputs):
    torch.manual_seed(7)
    for k, (lg, p) in enumerate(zip(split_scales(outputs.logits, PN), PN)):
        U = torch.rand((2, p * p * 32, 2))
        pairs = lg.reshape(2, -1, 2) - torch.log(-torch.log(U + 1e-20) + 1e-20)
        assert torch.equal(outputs.bits[k], (pairs[..., 1] > pairs[..., 0]).float().reshape(2, p, p, 32)), k
    state = torch.get_rng_state()
    torch.manual_seed(7)
    again = model.sample_outputs(images(), texts())
    assert torch.equal(torch.get_rng_state(), state)            # nothing but the bits drew from the generator
    assert torch.equal(again.image, outputs.image) and all(torch.equal(a, b) for a, b in zip(again.bits,
                                                                                             outputs.bits))
    torch.manual_seed(8)
    assert not torch.equal(model(images(), texts()), outputs.image)


def test_batch_rows_equal_each_image_alone(model):
    lq, txt = images(), texts()
    both = model.sample_outputs(lq.contiguous(memory_format=torch.channels_last), txt, argmax_bits=True)
    for i in range(2):
        one = model.sample_outputs(lq[i:i + 1], txt[i:i + 1], argmax_bits=True)
        for name in ("cleaned", "lq_latent", "pyramid", "logits"):
            assert torch.allclose(getattr(both, name)[i:i + 1], getattr(one, name), atol=5e-5), name
        assert torch.allclose(both.image[i:i + 1], one.image, atol=1e-4)


def test_text_drop_is_off_by_default_and_on_uses_the_null_text_and_its_own_generator(model, outputs):
    txt = texts()
    before = [t.clone() for t in txt]
    model.text_drop_at_inference = 1.0
    try:
        torch.manual_seed(7)
        dropped = model.sample_outputs(images(), txt)
        state = torch.get_rng_state()
    finally:
        model.text_drop_at_inference = 0.0
    assert all(torch.equal(a, b) for a, b in zip(txt, before))   # the caller's tensors are untouched
    null = [model.transformer.cfg_uncond[:t.shape[0]].detach() for t in txt]
    torch.manual_seed(7)
    with_null = model.sample_outputs(images(), null)
    assert torch.equal(torch.get_rng_state(), state)             # the drop draws did not use the global generator
    assert torch.allclose(dropped.logits, with_null.logits, atol=1e-6)
    assert not torch.allclose(dropped.logits, outputs.logits, atol=1e-3)


def test_without_swinir_the_input_is_encoded_as_it_is(model):
    m = VARestorer(**dict(model.settings().constructor_kwargs(), swinir=False))
    m.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("swinir.")})
    so = m.eval().sample_outputs(images(1), texts(1), argmax_bits=True)
    assert torch.equal(so.cleaned, images(1)) and m.swinir is None


def test_bad_inputs_are_one_line_errors(model):
    cases = [(torch.rand(1, 3, 64, 64), texts(1), "128x128 inputs only"),
             (torch.rand(1, 1, 128, 128), texts(1), "expected images"),
             ((torch.rand(1, 3, 128, 128) * 255).byte(), texts(1), "float tensor"),
             (images(2), texts(1), "list of 2 text feature tensors"),
             (images(1), [torch.randn(3, 64)], "text features must be"),
             (images(1), [torch.randn(0, 128)], "text features must be")]
    for x, t, msg in cases:
        with pytest.raises(VARestorerInputError, match=msg):
            model(x, t)
    with pytest.raises(VARestorerInputError, match="5 bit maps"):
        model.decode_bits([torch.zeros(1, 1, 1, 32)])


def test_bf16_autocast_touches_the_blocks_only(model):
    a = model.sample_outputs(images(1), texts(1), argmax_bits=True)
    with autocast(torch.device("cpu"), "bf16"):
        b = model.sample_outputs(images(1), texts(1), argmax_bits=True)
    for name in ("cleaned", "lq_latent", "pyramid"):                  # SwinIR, VAE, quantiser: float32
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert b.logits.dtype == torch.float32 and b.image.dtype == torch.float32
    assert torch.allclose(a.logits, b.logits, atol=0.05) and not torch.equal(a.logits, b.logits)
