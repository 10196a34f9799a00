import json

import pytest
import torch
import torch.nn.functional as F
from backbone_testutils import FIXTURES, assert_close

from varformer.backbone import VAR, VQVAE
from varformer.backbone.sampling import cfg_strength, combine_cfg

FULL = json.loads((FIXTURES / 'full_state_dict_shapes.json').read_text())


def test_strict_load_and_no_vae_keys(small_var, var_sd):
    assert len(var_sd) == 38 and set(small_var.state_dict()) == set(var_sd)
    assert not any(k.startswith('vae') for k in small_var.state_dict())
    buffers = {n for n, _ in small_var.named_buffers()}
    assert {'lvl_1L', 'attn_bias_for_masking', 'blocks.0.attn.zero_k_bias'} <= buffers
    assert small_var.vae.quantize.embedding.weight.shape == (4096, 32)


def test_buffers_equal_constructor_values(small_vae, var_sd):
    fresh = VAR(small_vae, depth=2)
    for name in ('lvl_1L', 'attn_bias_for_masking', 'blocks.1.attn.zero_k_bias'):
        assert torch.equal(fresh.state_dict()[name], var_sd[name]), name
    assert fresh.begin_ends[-1] == (424, 680) and fresh.L == 680


def test_teacher_forced_logits(tf_outputs, ref):
    idx_all = torch.cat(ref['idx_Bl'], dim=1)
    for kind in ('cond', 'uncond'):
        logits = tf_outputs[kind]
        assert logits.shape == (2, 680, 4096) and logits.dtype == torch.float32
        assert_close(logits[..., ::256], ref[f'tf_logits_{kind}_sub'], 2e-4, 1e-4, f'{kind} sub')
        assert_close(logits.logsumexp(-1), ref[f'tf_lse_{kind}'], 2e-4, 1e-5, f'{kind} lse')
        clear = ref[f'tf_top2_gap_{kind}'] > 1e-3
        assert torch.equal(logits.argmax(-1)[clear], ref[f'tf_argmax_{kind}'][clear])
    cond = tf_outputs['cond']
    assert_close(cond[:, :1], ref['tf_logits_cond_first_tokens'], 2e-4, 1e-4, 'first token')
    assert_close(F.cross_entropy(cond.reshape(-1, 4096), idx_all.reshape(-1)), ref['tf_ce_cond'], 1e-5, 1e-6)
    for si, (b, e) in enumerate(((0, 1), (1, 5), (5, 14), (14, 30), (30, 55), (55, 91), (91, 155), (155, 255),
                                 (255, 424), (424, 680))):
        ce = F.cross_entropy(cond[:, b:e].reshape(-1, 4096), idx_all[:, b:e].reshape(-1))
        assert_close(ce, ref['tf_ce_cond_per_scale'][si], 1e-5, 1e-6, f'ce scale {si}')


def test_cfg_logits_on_sampled_tokens(small_vae, small_var, ref):
    cfg = ref['meta']['ar_main']['cfg']
    with torch.no_grad():
        x = small_vae.indices_to_var_input(ref['ar_idx_Bl'])
        both = small_var(torch.cat((ref['label_B'], torch.full_like(ref['label_B'], 1000))), x.repeat(2, 1, 1))
        logits = small_var.forward_cfg(ref['label_B'], x, cfg)
    by_hand = torch.cat([combine_cfg(both[:, b:e], cfg_strength(cfg, si, 10))
                         for si, (b, e) in enumerate(small_var.begin_ends)], dim=1)
    assert_close(logits, by_hand, 1e-5, 1e-6)
    assert [cfg_strength(cfg, si, 10) for si in range(10)] == ref['meta']['ar_cfg_t_per_scale']
    assert_close(logits[..., ::256], ref['ar_logits_cfg_sub'], 1e-3, 1e-4, 'cfg logits')
    assert_close(logits.logsumexp(-1), ref['ar_lse_cfg'], 1e-3, 1e-5, 'cfg lse')


def test_label_dropout_only_in_training(small_var):
    labels = torch.tensor([3, 5, 7, 9])
    null = small_var.class_emb.weight[1000]
    rate = small_var.cond_drop_rate
    try:
        small_var.cond_drop_rate = 1.0
        assert torch.equal(small_var.class_condition(labels), small_var.class_emb(labels))   # eval: never
        small_var.train()
        assert torch.equal(small_var.class_condition(labels), null.expand(4, -1))             # train: always
    finally:
        small_var.cond_drop_rate = rate
        small_var.eval()


def _var_counts(var):
    blocks = sum(p.numel() for p in var.blocks.parameters())
    emb = sum(p.numel() for m in (var.word_embed, var.class_emb, var.lvl_embed) for p in m.parameters())
    emb += var.pos_start.numel() + var.pos_1LC.numel()
    return blocks, emb, sum(p.numel() for p in var.head_nm.parameters()), sum(p.numel() for p in var.head.parameters())


def test_full_size_models_on_meta_device():
    with torch.device('meta'):
        vae = VQVAE(ch=160)
        models = {d: VAR(vae, depth=d, num_classes=1000, shared_aln=False, attn_l2_norm=True) for d in (16, 20, 24, 30)}
    for depth, var in models.items():
        C, H = 64 * depth, depth
        total = sum(p.numel() for p in var.parameters())
        assert total == FULL['var_param_counts'][f'var_d{depth}'], depth
        assert _var_counts(var) == (depth * (18 * C * C + 14 * C + H), C * (1 + 680 + 1001 + 10) + 33 * C,
                                    2 * C * C + 2 * C, 4096 * C + 4096)
    for depth in (16, 20):
        official = FULL[f'var_d{depth}']['state_dict']
        ours = [[k, list(v.shape), str(v.dtype).replace('torch.', '')] for k, v in models[depth].state_dict().items()]
        assert ours == [e[:3] for e in official]
        assert {n for n, _ in models[depth].named_buffers()} == {e[0] for e in official if e[3] == 'buffer'}


def test_other_variants_run(small_vae, ref):
    """shared AdaLN (the 512-px model's layout) and plain (non-L2) attention build, have their keys and run."""
    torch.manual_seed(0)
    for kwargs, key in (({'shared_aln': True}, 'shared_ada_lin.1.weight'), ({'attn_l2_norm': False}, None)):
        var = VAR(small_vae, depth=1, **kwargs).eval()
        keys = set(var.state_dict())
        if key:
            assert key in keys and 'blocks.0.ada_gss' in keys and 'blocks.0.ada_lin.1.weight' not in keys
        else:
            assert 'blocks.0.attn.scale_mul_1H11' not in keys
        out = var.sample(2, ref['label_B'], cfg=0.0, greedy=True, keep_logits=True)
        with torch.no_grad():
            logits = var(ref['label_B'], small_vae.indices_to_var_input(out.idx_Bl))
        assert logits.shape == (2, 680, 4096) and torch.isfinite(logits).all()
        assert_close(torch.cat(out.cfg_logits, 1), logits, 1e-4, 1e-5, f'{kwargs}: KV cache vs masked forward')


def test_constructor_errors(small_vae):
    with pytest.raises(TypeError, match='VQVAE'):
        VAR(object(), depth=2)
    with pytest.raises(ValueError, match='depth'):
        VAR(small_vae, depth=0)
    with pytest.raises(ValueError, match='expected x'):
        VAR(small_vae, depth=1)(torch.tensor([1]), torch.zeros(1, 10, 32))


def test_teacher_forced_backward_reaches_every_parameter(small_vae, ref):
    torch.manual_seed(0)
    var = VAR(small_vae, depth=1).train()
    with torch.no_grad():
        for blk in var.blocks:
            blk.ada_lin[-1].weight.mul_(1e4)          # undo the near-identity init so every path carries gradient
    with torch.no_grad():
        x = small_vae.indices_to_var_input(ref['idx_Bl'])
    logits = var(ref['label_B'], x)
    F.cross_entropy(logits.reshape(-1, 4096), torch.cat(ref['idx_Bl'], 1).reshape(-1)).backward()
    no_grad = [n for n, p in var.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert no_grad == []
    assert small_vae.quantize.embedding.weight.grad is None      # the VQVAE is not part of VAR's graph
