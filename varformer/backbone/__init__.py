"""Frozen VAR backbone: VAR's multi-scale VQVAE and next-scale transformer, loading the official checkpoints
(`FoundationVision/var`: `vae_ch160v4096z32.pth`, `var_d16.pth` ... `var_d30.pth`) unchanged."""
from varformer.backbone.hub import load_vae, load_var
from varformer.backbone.var import VAR
from varformer.backbone.vqvae import VQVAE

__all__ = ['VQVAE', 'VAR', 'load_vae', 'load_var']
