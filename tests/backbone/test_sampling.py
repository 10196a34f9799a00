import pytest
import torch
from backbone_testutils import assert_close

from varformer.perf.backbone import bf16_token_flips
from varformer.backbone.sampling import combine_cfg, filter_top_k_top_p_

# Seeded tokens depend on torch's CPU exponential_ kernel (multinomial with one sample and the Gumbel noise draw
# through it), which changed in torch 2.8 (pytorch/pytorch#150538); the reference outputs were made with a newer
# torch, so older ones (the supported floor) skip the exact seeded-token comparison.
FIXTURE_RNG = torch.empty(2).exponential_(generator=torch.Generator().manual_seed(0)).tolist() == [
    3.508326292037964, 1.2303847074508667]
FIXTURE_RNG_REASON = f"torch {torch.__version__} draws exponential_ differently from the reference outputs' torch"


def _tf_cfg_logits(var, label_B, idx, cfg):
    """Teacher-forced CFG logits (B, 680, V) along the token path `idx`, and the conditional ones."""
    x = var.vae.indices_to_var_input(idx)
    return var.forward_cfg(label_B, x, cfg), var(label_B, x)


def test_filters_on_known_logits():
    logits = torch.tensor([[[1.0, 3.0, 3.0, 2.0, 0.0]]])
    kept = filter_top_k_top_p_(logits.clone(), top_k=2) > -torch.inf
    assert kept.tolist() == [[[False, True, True, False, False]]]           # ties at the threshold survive
    kept = filter_top_k_top_p_(torch.tensor([[[0.0, 5.0, 1.0]]]), top_p=1e-6) > -torch.inf
    assert kept.tolist() == [[[False, True, False]]]                        # the largest always survives
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    kept = filter_top_k_top_p_(probs.log().view(1, 1, 4), top_p=0.7) > -torch.inf
    assert kept.tolist() == [[[True, True, False, False]]]
    assert combine_cfg(torch.tensor([[2.0], [1.0]]), 0.5).item() == pytest.approx(2.5)


def test_generate_contract_and_seeded_tokens(small_var, ref):
    """Official FID settings with the reference seed: shapes, [0, 1] image = decoding of its own tokens, and the
    official sampler's tokens (same generator use as the official code)."""
    settings = ref['meta']['ar_main']
    idx, img = small_var.generate(2, ref['label_B'], g_seed=ref['meta']['ar_g_seed'], **settings)
    assert [tuple(t.shape) for t in idx] == [(2, pn * pn) for pn in (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)]
    assert all(t.dtype == torch.int64 for t in idx)
    assert img.shape == (2, 3, 256, 256) and img.min() >= 0 and img.max() <= 1
    with torch.no_grad():
        decoded = (small_var.vae.indices_to_img(idx) + 1) / 2
    assert_close(img, decoded, 2e-4, 0, 'image vs decoding of own tokens')
    if not FIXTURE_RNG:
        pytest.skip(FIXTURE_RNG_REASON)
    assert all(torch.equal(a, b) for a, b in zip(idx, ref['ar_idx_Bl'])), 'seeded tokens differ from official'
    assert_close(img[:, :, ::4, ::4], ref['ar_img'], 2e-4, 0, 'ar_img')
    assert_close(small_var.vae.indices_to_fhat(idx)[-1], ref['ar_fhat'], 5e-5, 1e-5, 'ar_fhat')


@pytest.mark.skipif(not FIXTURE_RNG, reason=FIXTURE_RNG_REASON)
def test_smooth_mode_seeded(small_var, ref):
    out = small_var.sample(2, ref['label_B'], g_seed=ref['meta']['ar_g_seed'], **ref['meta']['ar_smooth'])
    assert all(torch.equal(a, b) for a, b in zip(out.idx_Bl, ref['ar_smooth_idx_Bl']))
    assert_close(out.f_hat, ref['ar_smooth_fhat'], 1e-2, 0, 'smooth f_hat (loose)')


def test_seeded_sampling_is_reproducible_and_seed_dependent(small_var, ref):
    kw = dict(cfg=4.0, top_k=900, top_p=0.95)
    a = small_var.sample(2, ref['label_B'], g_seed=7, **kw).idx_Bl
    b = small_var.sample(2, ref['label_B'], g_seed=7, **kw).idx_Bl
    c = small_var.sample(2, ref['label_B'], g_seed=8, **kw).idx_Bl
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))
    assert all(blk.attn.cached_k is None and not blk.attn.caching for blk in small_var.blocks)


def test_kv_cached_logits_equal_teacher_forced_logits(small_var, ref):
    out = small_var.sample(2, ref['label_B'], cfg=1.5, top_k=900, top_p=0.96, g_seed=3, keep_logits=True)
    with torch.no_grad():
        tf_cfg, _ = _tf_cfg_logits(small_var, ref['label_B'], out.idx_Bl, 1.5)
    assert_close(torch.cat(out.cfg_logits, dim=1), tf_cfg, 1e-4, 1e-5, 'KV cache vs masked forward')


def test_cfg_zero_is_the_conditional_branch(small_var, ref):
    out = small_var.sample(2, ref['label_B'], cfg=0.0, greedy=True, keep_logits=True)
    with torch.no_grad():
        _, tf_cond = _tf_cfg_logits(small_var, ref['label_B'], out.idx_Bl, 0.0)
    assert_close(torch.cat(out.cfg_logits, dim=1), tf_cond, 1e-4, 1e-5, 'cfg 0 vs conditional')


def test_greedy_equals_argmax_of_teacher_forced_cfg_logits(small_var, ref):
    top1 = small_var.sample(2, ref['label_B'], cfg=1.5, top_k=1, g_seed=11).idx_Bl
    greedy = small_var.sample(2, ref['label_B'], cfg=1.5, greedy=True).idx_Bl
    assert all(torch.equal(a, b) for a, b in zip(top1, greedy))
    with torch.no_grad():
        tf_cfg, _ = _tf_cfg_logits(small_var, ref['label_B'], greedy, 1.5)
    top2 = tf_cfg.topk(2, dim=-1).values
    clear = (top2[..., 0] - top2[..., 1]) > 1e-4
    assert clear.float().mean() > 0.99
    assert torch.equal(tf_cfg.argmax(-1)[clear], torch.cat(greedy, dim=1)[clear])


@pytest.mark.parametrize('top_k,top_p', [(8, 0.0), (0, 0.5)])
def test_sampled_tokens_lie_in_the_allowed_set(small_var, ref, top_k, top_p):
    out = small_var.sample(2, ref['label_B'], cfg=1.5, top_k=top_k, top_p=top_p, g_seed=5, keep_logits=True)
    for logits, idx in zip(out.cfg_logits, out.idx_Bl):
        chosen = logits.gather(-1, idx.unsqueeze(-1))
        if top_k:
            kth = logits.topk(top_k, dim=-1).values[..., -1:]
            assert (chosen >= kth).all()
        if top_p:
            probs = logits.softmax(-1)
            mass_above = (probs * (probs > probs.gather(-1, idx.unsqueeze(-1)))).sum(-1)
            assert (mass_above < top_p + 1e-5).all()


def test_labels_argument(small_var):
    null = small_var.sample(2, -1, cfg=0.0, greedy=True, keep_logits=True)
    same = small_var.sample(2, torch.tensor([1000, 1000]), cfg=0.0, greedy=True, keep_logits=True)
    assert all(torch.equal(a, b) for a, b in zip(null.idx_Bl, same.idx_Bl))
    drawn = [small_var.sample(3, None, greedy=True, g_seed=4).idx_Bl[0] for _ in range(2)]
    assert torch.equal(drawn[0], drawn[1])
    with pytest.raises(ValueError, match='label_B'):
        small_var.sample(2, torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match='labels must lie'):
        small_var.sample(2, torch.tensor([1, 1001]))


def test_bf16_autocast_blocks(small_var, ref):
    """The transformer runs under CPU bf16 autocast; greedy tokens mostly agree with float32 (rates reported)."""
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
        x = small_var.vae.indices_to_var_input(ref['idx_Bl'])
        logits = small_var(ref['label_B'], x)
    assert x.dtype == torch.float32 and logits.dtype == torch.float32
    flips = bf16_token_flips(small_var, ref['label_B'], ref['ar_idx_Bl'], cfg=1.5)
    print('bf16 greedy token flips vs fp32:', flips)
    assert flips['teacher_forced_cfg_flip_rate'] < 0.05
    assert flips['teacher_forced_cond_flip_rate'] < 0.05
