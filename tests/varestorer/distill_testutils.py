"""The reduced VARestorer of the distillation tests (64 px: scales 1, 2, 4; 2 blocks of width 64, LoRA rank 4; a
BSQ-VAE of width 32; a one-block SwinIR) and a task built on it from random weights."""
import torch

from varformer.varestorer.distill_config import VARestorerDistillConfig
from varformer.varestorer.distill_models import freeze_for_distillation, teacher_of
from varformer.varestorer.distill_task import DistillTask
from varformer.varestorer.distill_text import PromptFeatures
from varformer.varestorer.model import VARestorer
from varformer.varestorer.settings import VARestorerSettings

SIZE = 64
TINY = dict(depth=2, embed_dim=64, num_heads=2, text_channels=128, lora_rank=4, block_chunks=2, patch_nums=[1, 2, 4],
            vae_base_ch=32, vae_ch_mult=[1, 1, 1, 1, 1], vae_num_res_blocks=1, swinir_embed_dim=24,
            swinir_depths=[1], swinir_num_heads=[2], swinir_window=8, swinir_mlp_ratio=2.0, swinir_num_feat=16)
SETTINGS = VARestorerSettings(**TINY).validate()


def loss_config(**changes) -> VARestorerDistillConfig:
    base = dict(lpips_weight=0.0, text_encoder="random", frozen_dtype="fp32", random_init_backbone=True,
                text_drop_rate=0.0, student_drop_path=0.0)
    return VARestorerDistillConfig(**{**base, **changes}).validate()


def student(seed=0, **settings) -> VARestorer:
    torch.manual_seed(seed)
    m = VARestorer(**SETTINGS.replace(**settings).constructor_kwargs())
    freeze_for_distillation(m)
    return m


def task(seed=0, lpips=None, **loss_changes) -> DistillTask:
    cfg = loss_config(**loss_changes)
    s = student(seed)
    teacher = teacher_of(s, shared=cfg.teacher_shares_weights) if cfg.needs_teacher else None
    t = DistillTask(s, teacher, cfg, PromptFeatures.from_config("random", None, SETTINGS.text_channels), lpips)
    return t.train()


def batch(n=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    gt = torch.rand(n, 3, SIZE, SIZE, generator=g)
    lq = (gt + 0.2 * torch.rand(n, 3, SIZE, SIZE, generator=g)).clamp(0, 1)
    return {"lq": lq, "gt": gt, "caption": ["a dog", "a cat on the sea"][:n] + ["a tree"] * max(0, n - 2)}


def official_files(folder, seed=0):
    """The three pre-trained files the distillation starts from, in the official layouts, at the reduced size:
    (infinity_2b_reg.pth: a plain Infinity, infinity_vae_d32reg.pth, general_swinir_v1.ckpt), written to folder."""
    import infinity_reference as ref

    from varformer.backbone.swin import relative_position_index, shifted_window_mask
    from varformer.backbone.swinir import official_shapes

    s = SETTINGS
    inf = ref.random_state_dict(ref.official_infinity_shapes(s.depth, s.embed_dim, s.num_heads, s.text_channels,
                                                             s.block_chunks, lora_rank=0), seed=seed, scale=0.05)
    g = torch.Generator().manual_seed(seed + 1)
    vae = {k: (1 + 0.1 * torch.randn(sh, generator=g)) if ".norm.weight" in k else 0.1 * torch.randn(sh, generator=g)
           for k, sh in ref.official_vae_shapes(s.vae_base_ch, tuple(s.vae_ch_mult), s.vae_num_res_blocks).items()}
    vae["quantizer.lfq.mask"] = 2 ** torch.arange(31, -1, -1)
    shapes, _ = official_shapes(s.swinir_kwargs())
    sw = {}
    for k, sh in shapes.items():
        if k.endswith("relative_position_index"):
            sw[k] = relative_position_index(s.swinir_window)
        elif k.endswith("attn_mask"):
            sw[k] = shifted_window_mask(64, 64, s.swinir_window, s.swinir_window // 2)
        else:
            sw[k] = (1.0 if "norm" in k and k.endswith("weight") else 0.0) + 0.05 * torch.randn(sh, generator=g)
    paths = [str(folder / n) for n in ("infinity_2b_reg.pth", "infinity_vae_d32reg.pth", "general_swinir_v1.ckpt")]
    for path, obj in zip(paths, (inf, {"vae": vae, "ema": vae}, {"state_dict": sw})):
        torch.save(obj, path)
    return paths, inf
