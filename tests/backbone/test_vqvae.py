import json

import pytest
import torch

from varformer.backbone import VQVAE

from backbone_testutils import FIXTURES, assert_close

FULL = json.loads((FIXTURES / 'full_state_dict_shapes.json').read_text())


def _listing(module):
    return [[k, list(v.shape), str(v.dtype).replace('torch.', '')] for k, v in module.state_dict().items()]


def test_strict_load_has_324_entries(small_vae, vae_sd):
    assert len(vae_sd) == 324 and set(small_vae.state_dict()) == set(vae_sd)
    assert 'quantize.ema_vocab_hit_SV' in dict(small_vae.named_buffers())


def test_encoder_and_encode(encoded, ref):
    assert_close(encoded['enc_out'], ref['enc_out'], 1e-4, 1e-4, 'enc_out')
    assert_close(encoded['f'], ref['f'], 1e-4, 1e-4, 'f')


def test_reconstruction(small_vae, ref):
    with torch.no_grad():
        fhat = small_vae.indices_to_fhat(ref['idx_Bl'])[-1]
        img = small_vae.fhat_to_img(fhat)
        assert img.shape == (2, 3, 256, 256) and img.min() >= -1 and img.max() <= 1
        assert_close(img[:, :, ::4, ::4], ref['rec_img'], 2e-4, 0, 'rec_img')


def test_feature_forwards_equal_plain_forwards(small_vae, ref):
    with torch.no_grad():
        z, feats, mid = small_vae.encoder.forward_features(ref['img_B3HW'][:1])
        assert torch.equal(z, small_vae.encoder(ref['img_B3HW'][:1]))
        assert torch.equal(small_vae.encode(ref['img_B3HW'][:1]), small_vae.quant_conv(z))
        assert [tuple(f.shape[1:]) for f in feats] == [(32, 256, 256), (32, 128, 128), (64, 64, 64), (64, 32, 32),
                                                      (128, 16, 16)]
        assert mid.shape == (1, 128, 16, 16)
        img, dfeats, dmid = small_vae.decoder.forward_features(z)
        assert torch.equal(img, small_vae.decoder(z))
        assert [tuple(f.shape[1:]) for f in dfeats] == [(32, 256, 256), (32, 128, 128), (64, 64, 64), (64, 32, 32),
                                                       (128, 16, 16)]


def test_bad_image_shape(small_vae):
    with pytest.raises(ValueError, match='expected images'):
        small_vae.encode(torch.zeros(1, 3, 128, 128))


def test_full_size_vqvae_on_meta_matches_official_listing():
    with torch.device('meta'):
        vae = VQVAE(vocab_size=4096, z_channels=32, ch=160, share_quant_resi=4,
                    patch_nums=(1, 2, 3, 4, 5, 6, 8, 10, 13, 16))
    official = FULL['vae_ch160v4096z32']
    assert _listing(vae) == [e[:3] for e in official['state_dict']]
    kinds = {e[0]: e[3] for e in official['state_dict']}
    assert {n for n, _ in vae.named_buffers()} == {k for k, v in kinds.items() if v == 'buffer'}
    assert sum(p.numel() for p in vae.parameters()) == official['num_params'] == 108_948_355
    for name, count in official['submodule_params'].items():
        assert sum(p.numel() for p in getattr(vae, name).parameters()) == count, name
