"""The restoration U-Net (official ``Mainencoder`` / ``main_decoder``; docs/architecture.md, steps 5, 7 and 8).

VQVAE-shaped (base width ``ch``, ``ch_mult`` (1,1,2,2,4), 2 res-blocks per level, attention at the lowest level),
with DAE + AFT (``PriorGuidance``) at levels 1-4 of the encoder (before the level's blocks) and of the decoder
(after the adaptive mix-up skip). Level 0 (full resolution) has no guidance: the official Lvl-0 modules are never
called and are not built here. Decoder res-blocks already reduce the width (640->320 at Lvl 4, ...).

The paper's ablation rows (docs/ablations.md) are constructor arguments: ``prior`` "dae" (today's model), "fixed"
(uniform scale weights, prior added to the feature: no bridge, no weight head, no region fusion) or "none" (no
guidance at all); ``aft`` (anchor attention after the fusion); ``mixup_skip`` (False: the additive skip h + E_i).
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

# the U-Net is VQVAE-shaped: its blocks are the autoencoder's (same computation, same key names)
from varformer.backbone.vqvae_blocks import AttnBlock, Downsample, MidBlock, ResnetBlock, Upsample
from varformer.model.aft import AnchorAttention, BridgeFeature, group_norm
from varformer.model.alignment import AlignStep
from varformer.model.dae import RegionFusion, ScaleSelection

LATENT_SIZE = 16


class Level(nn.Module):
    """One resolution level: ``block`` (res-blocks), ``attn`` (empty except at the lowest level), ``resample``."""

    def __init__(self, c_in: int, c_out: int, n_blocks: int, with_attn: bool, resample: Optional[nn.Module]):
        super().__init__()
        self.block = nn.ModuleList(ResnetBlock(c_in if i == 0 else c_out, c_out) for i in range(n_blocks))
        self.attn = nn.ModuleList(AttnBlock(c_out) for _ in range(n_blocks if with_attn else 0))
        self.resample = resample

    def body(self, h: torch.Tensor) -> torch.Tensor:
        for i, blk in enumerate(self.block):
            h = blk(h)
            if len(self.attn):
                h = self.attn[i](h)
        return h


class PriorGuidance(nn.Module):
    """DAE + AFT at one level: bridge feature -> scale selection -> region-adaptive fusion -> anchor attention.
    ``adaptive=False`` (ablation "fixed"): uniform scale weights and ``h + prior`` instead of bridge, weight head
    and fusion; ``aft=False``: the fused feature goes on without the anchor attention."""

    def __init__(self, vq_channels: int, h_channels: int, bridge_channels: int, up_factor: int, heads: int,
                 adaptive: bool = True, aft: bool = True):
        super().__init__()
        self.bridge = BridgeFeature(vq_channels, h_channels, bridge_channels) if adaptive else None
        self.select = ScaleSelection(bridge_channels, h_channels, up_factor, heads, adaptive=adaptive)
        self.fuse = RegionFusion(h_channels, heads) if adaptive else None
        self.aft = AnchorAttention(h_channels) if aft else None

    def forward(self, h: torch.Tensor, f_vq: Optional[torch.Tensor], priors: torch.Tensor
                ) -> Tuple[torch.Tensor, torch.Tensor]:
        if self.fuse is not None:
            prior, weights = self.select(self.bridge(f_vq, h), priors)
            h = self.fuse(h, prior)
        else:
            prior, weights = self.select(None, priors)
            h = h + prior.to(h.dtype)
        return (self.aft(h, prior) if self.aft is not None else h), weights


class UNetEncoder(nn.Module):
    """x (B,3,256,256) -> pre-quant_conv latent (B, z, 16, 16), skips E_0..E_4, DAE weights per level."""

    def __init__(self, ch: int = 160, ch_mult: Sequence[int] = (1, 1, 2, 2, 4), num_res_blocks: int = 2,
                 z_channels: int = 32, heads: int = 8, prior: str = "dae", aft: bool = True):
        super().__init__()
        n = len(ch_mult)
        widths = [ch * m for m in ch_mult]
        self.conv_in = nn.Conv2d(3, ch, 3, padding=1)
        self.down = nn.ModuleList()
        self.guidance = nn.ModuleDict()
        c_in = ch
        for i in range(n):
            if i > 0 and prior != "none":
                # bridge: concat(VQVAE encoder feature V_i (widths[i]), h (c_in)) -> widths[i]
                self.guidance[f"level{i}"] = PriorGuidance(widths[i], c_in, widths[i], 2 ** (n - 1 - i), heads,
                                                           adaptive=prior == "dae", aft=aft)
            self.down.append(Level(c_in, widths[i], num_res_blocks, with_attn=(i == n - 1),
                                   resample=Downsample(widths[i]) if i < n - 1 else None))
            c_in = widths[i]
        self.mid = MidBlock(c_in)
        self.norm_out = group_norm(c_in)
        self.conv_out = nn.Conv2d(c_in, z_channels, 3, padding=1)

    def forward(self, x: torch.Tensor, priors: Optional[torch.Tensor],
                vq_feats: Optional[Sequence[Optional[torch.Tensor]]]
                ) -> Tuple[torch.Tensor, List[torch.Tensor], Dict[str, torch.Tensor]]:
        h = self.conv_in(x)
        skips, weights = [], {}
        for i, level in enumerate(self.down):
            if f"level{i}" in self.guidance:
                h, weights[f"encoder.level{i}"] = self.guidance[f"level{i}"](h, vq_feats[i], priors)
            h = level.body(h)
            skips.append(h)
            if level.resample is not None:
                h = level.resample(h)
        h = self.conv_out(F.silu(self.norm_out(self.mid(h))))
        return h, skips, weights


class UNetDecoder(nn.Module):
    """y (B, z, 16, 16) + skips + priors + VQVAE-decoder features -> image (B, 3, 256, 256) (before the global
    residual), DAE weights per level. Adaptive mix-up skip: h <- sigmoid(theta_i) h + (1 - sigmoid(theta_i)) E_i
    (``mixup_skip=False``: h <- h + E_i)."""

    def __init__(self, ch: int = 160, ch_mult: Sequence[int] = (1, 1, 2, 2, 4), num_res_blocks: int = 2,
                 z_channels: int = 32, out_channels: int = 3, heads: int = 4, dec_adjust: bool = False,
                 prior: str = "dae", aft: bool = True, mixup_skip: bool = True):
        super().__init__()
        n = len(ch_mult)
        widths = [ch * m for m in ch_mult]
        self.n_levels = n
        self.conv_in = nn.Conv2d(z_channels, widths[-1], 3, padding=1)
        self.mid = MidBlock(widths[-1])
        self.theta = nn.Parameter(torch.ones(n)) if mixup_skip else None
        self.guidance = nn.ModuleDict()
        up = []
        for i in range(n):
            c_out = widths[max(i - 1, 0)]
            if i > 0 and prior != "none":
                self.guidance[f"level{i}"] = PriorGuidance(widths[i], widths[i], widths[i], 2 ** (n - 1 - i),
                                                           heads, adaptive=prior == "dae", aft=aft)
            up.append(Level(widths[i], c_out, num_res_blocks, with_attn=(i == n - 1),
                            resample=Upsample(c_out) if i > 0 else None))
        self.up = nn.ModuleList(up)  # index = level (0 = full resolution), run from n-1 down to 0
        self.norm_out = group_norm(widths[0])
        self.conv_out = nn.Conv2d(widths[0], out_channels, 3, padding=1)
        self.align = None
        if dec_adjust:
            # step "quant" after mid (aligns to the VQVAE-decoder mid feature), then one step after each upsample
            steps = {"quant": AlignStep(widths[-1], ch_mult[-1], 0, merge=False)}
            prev = widths[-1]
            for i in range(n - 1, 0, -1):
                steps[f"level{i}"] = AlignStep(widths[i - 1], ch_mult[i - 1], prev, merge=True)
                prev = widths[i - 1]
            self.align = nn.ModuleDict(steps)

    def forward(self, y: torch.Tensor, skips: Sequence[torch.Tensor], priors: Optional[torch.Tensor],
                vq_mid: Optional[torch.Tensor], vq_feats: Optional[Sequence[Optional[torch.Tensor]]]
                ) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        h = self.mid(self.conv_in(y))
        offset = None
        if self.align is not None:
            h, offset = self.align["quant"](h, vq_mid, None)
        weights = {}
        mix = torch.sigmoid(self.theta) if self.theta is not None else None
        for i in range(self.n_levels - 1, -1, -1):
            h = mix[i] * h + (1 - mix[i]) * skips[i] if mix is not None else h + skips[i]
            if f"level{i}" in self.guidance:
                h, weights[f"decoder.level{i}"] = self.guidance[f"level{i}"](h, vq_feats[i], priors)
            level = self.up[i]
            h = level.body(h)
            if level.resample is not None:
                h = level.resample(h)
                if self.align is not None:
                    h, offset = self.align[f"level{i}"](h, vq_feats[i - 1], offset)
        return self.conv_out(F.silu(self.norm_out(h))), weights
