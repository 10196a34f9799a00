"""LoRA: the release's layer formula and key names, injection on exactly the five attention linears of every block
(with the blocks' value bias switched off, D2), and the merge for inference."""
import torch
from varestorer_testutils import images, texts

from varformer.backbone.infinity import Infinity
from varformer.varestorer import LoraLinear, VARestorer, inject_lora, lora_parameters, merge_lora
from varformer.varestorer.lora import LORA_TARGETS


def test_lora_linear_is_w_x_plus_up_down_x_with_the_release_init():
    torch.manual_seed(0)
    base = torch.nn.Linear(16, 24)
    lora = LoraLinear(base, 4)
    assert set(lora.state_dict()) == {"linear.weight", "linear.bias", "lora_down.weight", "lora_up.weight"}
    assert torch.count_nonzero(lora.lora_up.weight) == 0                       # starts as the base linear
    assert 0.15 < lora.lora_down.weight.std().item() < 0.35                    # N(0, (1/r)^2), r = 4
    with torch.no_grad():
        lora.lora_up.weight.normal_()
    x = torch.randn(3, 16)
    W, b = base.weight, base.bias
    naive = x @ W.T + b + (x @ lora.lora_down.weight.T) @ lora.lora_up.weight.T
    with torch.no_grad():
        assert torch.allclose(lora(x), naive, atol=1e-5)
        assert torch.allclose(lora.merged()(x), naive, atol=1e-5)


def test_injection_wraps_the_five_attention_linears_of_every_block_only():
    m = Infinity(depth=4, embed_dim=64, num_heads=2, text_channels=128, block_chunks=2, patch_nums=(1, 2, 4))
    names = inject_lora(m, 3)
    assert names == [f"block_chunks.{b // 2}.module.{b % 2}.{t}" for b in range(4) for t in LORA_TARGETS]
    wrapped = {n for n, mod in m.named_modules() if isinstance(mod, LoraLinear)}
    assert wrapped == set(names)                                   # the attentive text pool is not touched
    assert not isinstance(m.text_proj_for_sos.ca.mat_kv, LoraLinear)
    assert all(not b.ca.use_value_bias for b in m.iter_blocks())   # D2
    assert len(lora_parameters(m)) == 4 * 5 * 2
    # r (in + out) per linear: qkv 64->192, three 64->64, kv 64->128
    assert sum(p.numel() for p in lora_parameters(m)) == 4 * 3 * ((64 + 192) + 3 * (64 + 64) + (64 + 128))


def test_merge_gives_the_unmerged_outputs_with_plain_keys(model):
    m = VARestorer(**model.settings().constructor_kwargs())
    m.load_state_dict(model.state_dict())
    m.eval()
    before = m.sample_outputs(images(1), texts(1), argmax_bits=True)
    assert m.merge_lora() == 2 * 5 and merge_lora(m.transformer) == 0
    keys = m.state_dict().keys()
    assert not any(".lora_" in k or ".linear." in k for k in keys)
    assert "transformer.block_chunks.0.module.0.sa.mat_qkv.weight" in keys
    assert all(not b.ca.use_value_bias for b in m.transformer.iter_blocks())   # still without the value bias
    after = m.sample_outputs(images(1), texts(1), argmax_bits=True)
    assert torch.allclose(after.logits, before.logits, atol=1e-4)


def test_release_bf16_block_weights_round_everything_but_lora(model):
    m = VARestorer(**model.settings().constructor_kwargs())
    m.load_state_dict(model.state_dict())
    n = m.round_block_weights_to_bf16()
    sd = m.state_dict()
    blocks = [k for k in sd if k.startswith("transformer.block_chunks.")]
    assert n == sum(".lora_" not in k for k in blocks)
    for k in blocks:
        assert torch.equal(sd[k], sd[k].bfloat16().float()) is (".lora_" not in k), k   # LoRA stays float32
    assert torch.equal(sd["transformer.head.weight"], model.state_dict()["transformer.head.weight"])
