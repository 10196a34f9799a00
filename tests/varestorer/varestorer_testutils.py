"""The reduced VARestorer of the tests (128 px: 5 scales, 2 blocks of width 128, LoRA rank 4, a BSQ-VAE of base
width 32, a one-group SwinIR) and its official files built from the official key rules with random tensors."""
import infinity_reference as ref
import torch

from varformer.backbone.swin import relative_position_index, shifted_window_mask
from varformer.backbone.swinir import official_shapes
from varformer.varestorer import VARestorerSettings

SIZE = 128
PN = (1, 2, 4, 6, 8)
SMALL = dict(depth=2, embed_dim=128, num_heads=2, text_channels=128, lora_rank=4, block_chunks=2,
             patch_nums=list(PN), vae_base_ch=32, vae_ch_mult=[1, 2, 2, 2, 2], vae_num_res_blocks=1,
             swinir_embed_dim=24, swinir_depths=[2], swinir_num_heads=[2], swinir_window=8, swinir_mlp_ratio=2.0,
             swinir_num_feat=16)
SETTINGS = VARestorerSettings(**SMALL).validate()


def official_model_sd(seed=0, chunks=2):
    shapes = ref.official_infinity_shapes(2, 128, 2, 128, chunks, lora_rank=4)
    sd = ref.random_state_dict(shapes, seed=seed, scale=0.05)
    return sd


def official_vae_file(seed=1):
    g = torch.Generator().manual_seed(seed)
    shapes = ref.official_vae_shapes(32, (1, 2, 2, 2, 2), 1)
    sd = {k: (1 + 0.1 * torch.randn(s, generator=g)) if ".norm.weight" in k else 0.1 * torch.randn(s, generator=g)
          for k, s in shapes.items()}
    sd["quantizer.lfq.mask"] = 2 ** torch.arange(31, -1, -1)
    return {"vae": sd, "ema": {k: v.clone() for k, v in sd.items()}}


def official_swinir_file(seed=2):
    lay = SETTINGS.swinir_kwargs()
    shapes, _ = official_shapes(lay)
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for k, s in shapes.items():
        if k.endswith("relative_position_index"):
            sd[k] = relative_position_index(8)
        elif k.endswith("attn_mask"):
            sd[k] = shifted_window_mask(64, 64, 8, 4)
        else:
            sd[k] = (1.0 if "norm" in k and k.endswith("weight") else 0.0) + 0.05 * torch.randn(s, generator=g)
    return {"state_dict": {"module." + k: v for k, v in sd.items()}}


def texts(n=2, seed=3):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(5 - 2 * (i % 2), 128, generator=g) for i in range(n)]


def images(n=2, seed=4):
    return torch.rand(n, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def merged_reference_sd(sd):
    """The official state dict with every LoRA folded in by the literal formula W + up @ down (plain keys)."""
    out = {}
    for k, v in sd.items():
        if ".lora_" in k:
            continue
        if ".linear." in k:
            base = k.replace(".linear.", ".")
            if k.endswith(".weight"):
                stem = k[:-len(".linear.weight")]
                v = v + sd[stem + ".lora_up.weight"] @ sd[stem + ".lora_down.weight"]
            out[base] = v
        else:
            out[k] = v
    return out
