"""Helpers of the RestoreVAR tests: a reduced model (VQVAE width 32, VAR depth 2 / width 128, four scales up to a
4x4 latent = 64x64 images, one refiner layer) with random weights."""
import torch

from varformer.restorevar import RestoreVAR

SMALL = dict(depth=2, embed_dim=128, vae_ch=32, patch_nums=(1, 2, 3, 4), refiner_depth=1, refiner_dim=64,
             refiner_heads=1, refiner_mlp_dim=128)
SIZE = 64


def randomise(model: RestoreVAR, seed: int = 0) -> RestoreVAR:
    """Random values for the parameters the official initialisation leaves at constants (gains at 0, scale_mul at
    ln 4, biases at 0), so that every path of the computation carries signal in the checks."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        model.var.global_embed_gain.fill_(0.8)
        for blk in model.var.blocks:
            blk.cross_attn.gain.fill_(0.6)
            for p in (blk.attn.scale_mul_1H11, blk.cross_attn.scale_mul_1H11):
                p.copy_(torch.rand(p.shape, generator=g) * 5.0)      # some above the ln(100) clamp
            for p in (blk.attn.q_bias, blk.attn.v_bias, blk.cross_attn.norm_q.weight, blk.cross_attn.norm_kv.bias):
                p.add_(torch.randn(p.shape, generator=g) * 0.1)
        model.var.head.weight.mul_(20.0)                               # logits with clear winners
    return model


def small_model(seed: int = 0, **changes) -> RestoreVAR:
    torch.manual_seed(seed)
    m = RestoreVAR(**dict(SMALL, **changes))
    m.var.init_weights()
    if m.refiner is not None:
        m.refiner.init_weights(0.05)
    return randomise(m, seed).eval()
