"""One distillation step on the reduced model (varformer/varestorer/distill_task.py, distill_models.py): what
trains, the straight-through decode, the teacher's shared weights, text drop, a few optimiser steps, the export in
the release's file layout."""
import os

import pytest
import torch
from distill_testutils import SETTINGS, batch, student, task

from varformer.backbone.infinity.bit_sampling import sample_bits
from varformer.varestorer.distill_models import cast_frozen_blocks, teacher_of
from varformer.varestorer.distill_task import export_official
from varformer.varestorer.model import VARestorer
from varformer.varestorer.perceptual import load_training_lpips

PN = tuple(SETTINGS.patch_nums)
L = sum(p * p for p in PN)


def test_gradients_reach_only_the_lora_tensors():
    lpips = load_training_lpips("alex", random_trunk=True)
    t = task(lpips=lpips, lpips_weight=1.0)
    out = t(batch())
    assert set(out.terms) >= {"kl", "mse", "lpips", "total", "metric_bit_acc"}
    out.loss.backward()
    grads = {n: p.grad for n, p in t.named_parameters()}
    lora = [n for n in grads if ".lora_down." in n or ".lora_up." in n]
    assert len(lora) == 2 * 5 * SETTINGS.depth
    assert all(grads[n] is not None for n in lora)
    assert all(g is None for n, g in grads.items() if n not in lora)
    assert all(float(grads[n].abs().sum()) > 0 for n in lora if ".lora_up." in n)
    assert [n for n, p in t.named_parameters() if p.requires_grad] == lora


def test_straight_through_decode_passes_gradients_to_the_logits():
    """The decode draws the release's bits (same CPU draws as sample_bits) and is differentiable in the logits
    through the soft Gumbel sample and the frozen decoder."""
    t = task()
    logits = torch.randn(2, L, 64, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    torch.manual_seed(5)
    img = t.decode(logits)
    torch.manual_seed(5)
    hard = t.model.decode_bits(sample_bits(logits.detach(), PN)) * 2 - 1
    assert torch.allclose(img.detach(), hard, atol=1e-5)
    img.square().mean().backward()
    assert logits.grad is not None and bool(torch.isfinite(logits.grad).all()) and float(logits.grad.abs().sum()) > 0


def test_teacher_shares_the_student_base_and_stays_frozen():
    s = student()
    shared = teacher_of(s, shared=True)
    copy = teacher_of(s, shared=False)
    key, plain = "block_chunks.0.module.0.sa.mat_qkv.linear.weight", "block_chunks.0.module.0.sa.mat_qkv.weight"
    sp, tp, cp = dict(s.transformer.named_parameters()), dict(shared.named_parameters()), dict(copy.named_parameters())
    assert tp[plain] is sp[key] and cp[plain] is not sp[key] and torch.equal(cp[plain], sp[key])
    assert not any(p.requires_grad for p in shared.parameters()) and not shared.training
    assert all(b.ca.use_value_bias for b in shared.iter_blocks())      # the plain model keeps the value bias
    assert not any(b.ca.use_value_bias for b in s.transformer.iter_blocks())
    t = torch.nn.Module()
    t.model, t.teacher = s, shared
    t.double()                                                           # moves/converts both at once
    assert dict(shared.named_parameters())[plain] is dict(s.transformer.named_parameters())[key]
    assert shared.pos_start.dtype == torch.float64
    s.float()
    n = cast_frozen_blocks(s, torch.bfloat16)
    assert n > 0 and tp[plain].dtype == torch.bfloat16
    assert dict(s.transformer.named_parameters())[key.replace(".linear.", ".lora_up.")].dtype == torch.float32


def test_bf16_blocks_run_under_autocast():
    t = task()
    cast_frozen_blocks(t.model, torch.bfloat16)
    with torch.autocast("cpu", torch.bfloat16):
        out = t(batch(1))
    out.loss.backward()
    assert torch.isfinite(out.loss) and t.model.transformer.iter_blocks()[0].sa.proj.lora_up.weight.grad is not None


def test_text_drop_and_teacher_text():
    t = task(text_drop_rate=1.0)
    text_S, text_T, drop = t._texts(["a dog", "a cat on the sea"], torch.device("cpu"))
    assert bool(drop.all()) and text_T is text_S
    null = t.model.transformer.cfg_uncond
    assert torch.equal(text_S.features_BTC[0, :3], null[:3])
    t = task(text_drop_rate=0.0, teacher_text="null")
    text_S, text_T, drop = t._texts(["a dog", "a cat on the sea"], torch.device("cpu"))
    assert not bool(drop.any()) and torch.equal(text_T.features_BTC[1, :5], null[:5])
    assert not torch.equal(text_S.features_BTC[1, :5], null[:5])


@pytest.mark.parametrize("changes", [dict(), dict(bit_loss="ce"), dict(cross_scale_attention=False)])
def test_a_few_steps_lower_the_loss(changes):
    """The distillation and two ablations (no distillation: CE on the HQ bits; no cross-scale attention): Adam on
    the LoRA tensors lowers the bit loss on one batch. The pixel losses are off here: through this random-init
    decoder their straight-through signal is below the noise of 8 steps (their gradient path is tested above)."""
    t = task(mse_weight=0.0, **changes)
    b = batch()
    opt = torch.optim.Adam([p for p in t.parameters() if p.requires_grad], lr=1e-2)

    def loss_now():
        with torch.no_grad():
            return float(t(b).loss)

    before = loss_now()
    for step in range(8):
        torch.manual_seed(100 + step)
        t(b).loss.backward()
        opt.step()
        opt.zero_grad()
    assert (t.teacher is None) == (changes.get("bit_loss") == "ce")
    assert loss_now() < 0.95 * before


def test_export_is_the_release_layout_and_loads(tmp_path):
    """The exported student loads with VARestorer.from_official (strict per file) and restores as the trained
    model does (the same seeded draws)."""
    t = task()
    for blk in t.model.transformer.iter_blocks():
        torch.nn.init.normal_(blk.ca.proj.lora_up.weight, std=0.02)      # "trained" LoRA
    path, vae, swinir = export_official(t.model, str(tmp_path / "official"), with_frozen_parts=True)
    assert [os.path.basename(p) for p in (path, vae, swinir)] == ["varestorer.pth", "infinity_vae_d32reg.pth",
                                                                  "general_swinir_v1.ckpt"]
    sd = torch.load(path, weights_only=True)
    assert all(v.dtype == torch.float32 for v in sd.values())
    assert any(k.endswith("sa.mat_qkv.lora_up.weight") for k in sd) and "cfg_uncond" in sd
    loaded = VARestorer.from_official(path, vae, swinir, patch_nums=PN)
    own = t.model.state_dict()
    assert set(loaded.state_dict()) == set(own)
    assert all(torch.equal(v, own[k]) for k, v in loaded.state_dict().items())
    lq = batch()["lq"]
    text = t.text(["a dog", "a dog"])
    t.model.eval()
    torch.manual_seed(3)
    a = t.model(lq, text)
    torch.manual_seed(3)
    assert torch.equal(loaded(lq, text), a)


def test_validation_restores_with_the_val_prompt():
    """Held-out pairs are restored by the student with argmax bits and the validation prompt (under bf16 autocast
    when the frozen blocks are stored in bf16): PSNR/SSIM of output and input, and visuals."""
    for frozen in ("fp32", "bf16"):
        t = task(frozen_dtype=frozen, val_prompt="a photo")
        if frozen == "bf16":
            cast_frozen_blocks(t.model, torch.bfloat16)
        b = batch(3)
        t.val_pairs, t.val_batch = [{"lq": b["lq"][i], "gt": b["gt"][i]} for i in range(3)], 2
        t.eval()
        with torch.no_grad():
            metrics = t.validate(t.model, step=0)
            again = t.validate(t.model, step=0)
        assert set(metrics) == {"psnr", "ssim", "psnr_input"} and metrics == again      # argmax bits: deterministic
        assert t.validation_visuals()["output"].shape == (3, 3, SETTINGS.image_size, SETTINGS.image_size)
