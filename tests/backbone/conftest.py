"""Shared fixtures of the backbone tests: the developer parity set of the official VAR code (reduced width,
random dyadic weights; see tests/fixtures/var/README.md), loaded once per session."""
import contextlib

import pytest
import torch
from backbone_testutils import FIXTURES, load_xz

from varformer.backbone import VAR, VQVAE


@contextlib.contextmanager
def one_thread():
    """One intra-op thread for the backbone tests: the sampler is thousands of small ops, and with two threads on a
    busy 2-core machine every op waits at an OpenMP barrier for a descheduled thread (measured 5-10x slower);
    the reference tolerances hold for any thread count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _one_thread():
    with one_thread():
        yield


@pytest.fixture(scope='session')
def ref():
    return load_xz(FIXTURES / 'ref_outputs.pt.xz')


@pytest.fixture(scope='session')
def vae_sd():
    return load_xz(FIXTURES / 'vae_small.pth.xz')


@pytest.fixture(scope='session')
def var_sd():
    return load_xz(FIXTURES / 'var_small.pth.xz')


@pytest.fixture(scope='session')
def small_vae(vae_sd):
    vae = VQVAE(vocab_size=4096, z_channels=32, ch=32, share_quant_resi=4, patch_nums=(1, 2, 3, 4, 5, 6, 8, 10, 13, 16))
    vae.load_state_dict(vae_sd, strict=True)
    return vae.eval()


@pytest.fixture(scope='session')
def small_var(small_vae, var_sd):
    var = VAR(small_vae, depth=2, num_classes=1000, shared_aln=False, attn_l2_norm=True)
    var.load_state_dict(var_sd, strict=True)
    return var.eval()


@pytest.fixture(scope='session')
def tf_outputs(small_vae, small_var, ref):
    """Teacher-forced logits (cond, uncond) on the reference tokens."""
    with torch.no_grad(), one_thread():
        x = small_vae.indices_to_var_input(ref['idx_Bl'])
        cond = small_var(ref['label_B'], x)
        uncond = small_var(torch.full_like(ref['label_B'], 1000), x)
    return {'x': x, 'cond': cond, 'uncond': uncond}


@pytest.fixture(scope='session')
def encoded(small_vae, ref):
    """One pass of the encoder and the code search over the reference images."""
    with torch.no_grad(), one_thread():
        enc_out = small_vae.encoder(ref['img_B3HW'])
        f = small_vae.quant_conv(enc_out)
        idx, fhats = small_vae.f_to_indices_and_fhats(f)
    return {'enc_out': enc_out, 'f': f, 'idx': idx, 'fhats': fhats}
