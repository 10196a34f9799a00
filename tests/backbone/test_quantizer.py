import pytest
import torch

from varformer.backbone.quantizer import MultiScaleQuantizer, phi_index_table
from varformer.backbone.vqvae import VQVAE

from backbone_testutils import assert_close


def test_phi_table_is_the_normative_one():
    assert phi_index_table(4, 10) == [0, 0, 1, 1, 1, 2, 2, 3, 3, 3]
    q = MultiScaleQuantizer(share_quant_resi=4)
    assert [q.quant_resi.index_per_scale[si] for si in range(10)] == [0, 0, 1, 1, 1, 2, 2, 3, 3, 3]
    assert phi_index_table(2, 3) == [0, 0, 1]   # K != 4 uses linspace(1/2K, 1 - 1/2K)


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match='share_quant_resi'):
        MultiScaleQuantizer(share_quant_resi=0)
    with pytest.raises(ValueError, match='increasing'):
        MultiScaleQuantizer(patch_nums=(1, 3, 2, 16))


def test_indices_exact(encoded, ref):
    idx = encoded['idx']
    assert len(idx) == 10
    for si, (ours, theirs) in enumerate(zip(idx, ref['idx_Bl'])):
        assert ours.dtype == torch.int64 and torch.equal(ours, theirs), f"scale {si}"


def test_fhat_per_scale_and_self_consistency(small_vae, encoded, ref):
    fhats = small_vae.indices_to_fhat(ref['idx_Bl'])
    for si, fh in enumerate(fhats):
        assert_close(fh[:, :, ::3, ::3], ref['fhat_per_scale'][si], 5e-5, 1e-5, f'fhat {si}')
    # f_hat recorded during the code search == f_hat recomputed from the indices alone
    for a, b in zip(small_vae.indices_to_fhat(encoded['idx']), encoded['fhats']):
        assert_close(a, b, 1e-6, 1e-6)


def test_var_input(small_vae, ref):
    x = small_vae.indices_to_var_input(ref['idx_Bl'])
    assert x.shape == (2, 679, 32) and x.dtype == torch.float32
    assert_close(x[:, ::3], ref['var_input'], 5e-5, 1e-5, 'var_input')
    assert torch.equal(small_vae.indices_to_var_input(ref['idx_Bl'][:-1]), x)   # last map not needed


def test_autoregressive_step_matches_whole_sequence_functions(small_vae, ref):
    q = small_vae.quantize
    f_hat, nexts = None, []
    for si, idx in enumerate(ref['idx_Bl']):
        f_hat, residual, tokens = small_vae.autoregressive_step(f_hat, q.embed_tokens(idx, si), si)
        assert residual.shape == (2, 32, 16, 16)
        if tokens is not None:
            nexts.append(tokens)
        else:
            assert si == 9
    assert torch.equal(f_hat, small_vae.indices_to_fhat(ref['idx_Bl'])[-1])
    assert torch.equal(torch.cat(nexts, 1), small_vae.indices_to_var_input(ref['idx_Bl']))


def test_training_forward_loss_gradient_and_decoder(small_vae, ref):
    f = ref['f'].clone().requires_grad_(True)
    f_hat, usages, loss = small_vae.quantize(f)
    assert usages is None
    assert_close(loss, ref['vq_fwd_loss'], 1e-6, 1e-5, 'vq_loss')
    dec = small_vae.decoder(small_vae.post_quant_conv(f_hat))
    (ref['meta']['grad_loss_scale'] * (dec.square().mean() + loss)).backward()
    assert_close(f.grad[:, :, ::2, ::2], ref['vq_fwd_grad_f'], 1e-4, 1e-4, 'grad f')
    assert_close(dec[:, :, ::8, ::8], ref['vq_fwd_dec_strided'], 2e-4, 0, 'dec')
    small_vae.zero_grad(set_to_none=True)


def test_training_forward_value_is_last_fhat_and_usages(small_vae, ref):
    with torch.no_grad():
        f_hat, usages, loss = small_vae.quantize(ref['f'], return_usages=True)
    assert_close(f_hat, small_vae.indices_to_fhat(ref['idx_Bl'])[-1], 1e-5, 1e-5)
    assert usages == [0.0] * 10          # single process: the EMA hit counters never move


def test_quantizer_stays_fp32_under_autocast(small_vae, encoded, ref):
    with torch.autocast('cpu', dtype=torch.bfloat16):
        idx = small_vae.img_to_indices(ref['img_B3HW'][1:])    # encoder + search in float32 despite autocast
        f_hat, _, loss = small_vae.quantize(ref['f'])
        fhats = small_vae.indices_to_fhat(ref['idx_Bl'])
        x = small_vae.indices_to_var_input(ref['idx_Bl'])
    assert f_hat.dtype == loss.dtype == fhats[-1].dtype == x.dtype == torch.float32
    assert all(torch.equal(a, b[1:]) for a, b in zip(idx, ref['idx_Bl']))
    assert_close(loss, ref['vq_fwd_loss'], 1e-6, 1e-5)


def test_ema_buffer_of_other_scale_count_is_tolerated(vae_sd):
    sd = dict(vae_sd)
    sd['quantize.ema_vocab_hit_SV'] = torch.ones(7, 4096)
    vae = VQVAE(ch=32)
    vae.load_state_dict(sd, strict=True)
    assert torch.equal(vae.quantize.ema_vocab_hit_SV, torch.zeros(10, 4096))


def test_bad_index_maps_are_rejected(small_vae, ref):
    with pytest.raises(ValueError, match='expected 10 index maps'):
        small_vae.indices_to_fhat(ref['idx_Bl'][:5])
    bad = list(ref['idx_Bl'])
    bad[3] = bad[3][:, :5]
    with pytest.raises(ValueError, match='scale 3'):
        small_vae.indices_to_fhat(bad)


def test_bad_latent_shape_is_rejected(small_vae):
    with pytest.raises(ValueError, match=r'expected a latent \(B, 32, 16, 16\)'):
        small_vae.f_to_indices(torch.zeros(1, 32, 8, 8))
    with pytest.raises(ValueError, match='expected a latent'):
        small_vae.quantize(torch.zeros(1, 16, 16, 16))
