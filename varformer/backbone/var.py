"""VAR: class-conditional next-scale prediction transformer over the multi-scale VQVAE's tokens.

    var = VAR(vae, depth=16, num_classes=1000, shared_aln=False, attn_l2_norm=True)   # width 64*depth, depth heads
    var.load_state_dict(torch.load('var_d16.pth', weights_only=True), strict=True)
    logits = var(label_B, vae.indices_to_var_input(idx))    # (B, 680, 4096) teacher-forced; label 1000 = null
    idx, img = var.generate(B, label_B, cfg=1.5, top_k=900, top_p=0.96, g_seed=0)      # img in [0, 1]

The VQVAE is reachable as `var.vae` but is *not* a sub-module (the official VAR checkpoint holds no `vae.*` keys):
`var.to(device)` / `var.eval()` do not touch it, move and switch it yourself (the loaders in hub.py do).

Building blocks for callers that run their own next-scale loop (VarFormer's greedy rollout with cross-attention;
`sample` below is written with exactly these pieces):

    cond_BD = var.class_condition(label_B)          # (B, D) class embedding (label dropout only in training)
    block_cond = var.block_condition(cond_BD)       # what every block takes as its condition
    lvl_pos = var.lvl_pos()                         # (1, L, C) level + position embeddings of all tokens
    x = var.first_scale_input(cond_BD, lvl_pos)     # (B, 1, C) class token = scale-0 input
    f_hat = None                                    # running VQVAE latent, (B, Cvae, 16, 16) after scale 0
    with var.kv_cache():                            # empty KV caches on, cleared on exit
        for si, pn in enumerate(var.patch_nums):
            for block in var.blocks:                # hook point after each block
                x = block(x, block_cond, None)      # KV cache gives block-causality, so no mask
            logits = var.logits(x, cond_BD)         # head_nm + head, float32: (B, pn^2, V)
            logits = combine_cfg(logits, cfg_strength(cfg, si, var.num_scales))   # rows [cond; uncond] -> B rows
            # (sampling.py: combine_cfg, cfg_strength, filter_top_k_top_p_, sample_from_logits)
            idx = logits.argmax(-1)                 # or filter_top_k_top_p_ + sample_from_logits
            h = var.vae.quantize.embed_tokens(idx, si)                  # (B, Cvae, pn, pn) codebook rows
            f_hat, residual, tokens = var.vae.autoregressive_step(f_hat, h, si)   # residual = phi(up(h)): the prior
            if tokens is not None:
                x = var.scale_input(tokens, si + 1, lvl_pos)    # word_embed + level/pos embeddings
                # (with CFG rows, duplicate: x.repeat(2, 1, 1))

All of these keep autograd (nothing is in place), so a rollout can be trained through; `sample`/`generate` below
are the no-grad / inference-mode versions.

`var.begin_ends[si]` is scale si's token range in the 680-token sequence. The embeddings are computed with autocast
disabled and the head in float32; the blocks follow the caller's autocast (bf16 is fine for the blocks).
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from varformer import ops
from varformer.backbone.sampling import (cfg_strength, combine_cfg, filter_top_k_top_p_, gumbel_softmax_weights,
                                         sample_from_logits, smooth_tau)
from varformer.backbone.transformer_blocks import AdaLNBeforeHead, AdaLNSelfAttn
from varformer.backbone.vqvae import VQVAE
from varformer.runtime import fp32_region


class SharedAdaLin(nn.Linear):
    """Model-level AdaLN projection of `shared_aln=True` models: (B, D) -> (B, 1, 6, C)."""

    def forward(self, cond_BD: torch.Tensor) -> torch.Tensor:
        C = self.out_features // 6
        return super().forward(cond_BD).view(-1, 1, 6, C)


@dataclass
class SampleOutput:
    """Result of `VAR.sample`: index maps (B, pn^2) per scale, the final f_hat (B, Cvae, 16, 16) and, when
    requested, the CFG-combined logits (B, pn^2, V) per scale as seen before top-k/top-p filtering."""
    idx_Bl: list[torch.Tensor]
    f_hat: torch.Tensor
    cfg_logits: list[torch.Tensor] = field(default_factory=list)


class VAR(nn.Module):
    def __init__(self, vae: VQVAE, depth: int = 16, num_classes: int = 1000, shared_aln: bool = False,
                 attn_l2_norm: bool = True, mlp_ratio: float = 4.0, drop_path_rate: float | None = None,
                 cond_drop_rate: float = 0.1, norm_eps: float = 1e-6, random_init: bool = True):
        super().__init__()
        if not isinstance(vae, VQVAE):
            raise TypeError(f"VAR needs the VQVAE it predicts tokens of, got {type(vae).__name__}")
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self._vae = (vae,)     # a tuple hides the VQVAE from nn.Module: no `vae.*` keys, no double .to()/.train()
        self.depth, self.num_classes, self.cond_drop_rate = depth, num_classes, cond_drop_rate
        self.C = self.D = 64 * depth
        self.num_heads = depth
        self.Cvae, self.V = vae.Cvae, vae.vocab_size
        self.patch_nums = vae.patch_nums
        self.first_l = self.patch_nums[0] ** 2
        self.L = sum(pn * pn for pn in self.patch_nums)
        self.begin_ends, cur = [], 0
        for pn in self.patch_nums:
            self.begin_ends.append((cur, cur + pn * pn))
            cur += pn * pn
        self.shared_aln = shared_aln
        drop_path_rate = 0.1 * depth / 24 if drop_path_rate is None else drop_path_rate
        init_std = math.sqrt(1 / self.C / 3)

        self.pos_start = nn.Parameter(torch.empty(1, self.first_l, self.C))
        self.pos_1LC = nn.Parameter(torch.empty(1, self.L, self.C))
        lvl_L1 = torch.cat([torch.full((pn * pn,), si) for si, pn in enumerate(self.patch_nums)]).view(1, self.L, 1)
        lvl_1L = lvl_L1.transpose(1, 2)
        self.register_buffer('lvl_1L', lvl_1L[:, 0].contiguous())
        # block-causal additive mask: a query sees keys of its own and all coarser scales
        self.register_buffer('attn_bias_for_masking',
                             torch.where(lvl_L1 >= lvl_1L, 0.0, -torch.inf).reshape(1, 1, self.L, self.L).contiguous())

        self.word_embed = nn.Linear(self.Cvae, self.C)
        self.class_emb = nn.Embedding(num_classes + 1, self.C)     # row num_classes = null class (CFG)
        self.lvl_embed = nn.Embedding(len(self.patch_nums), self.C)
        self.shared_ada_lin = (nn.Sequential(nn.SiLU(inplace=False), SharedAdaLin(self.D, 6 * self.C))
                               if shared_aln else nn.Identity())
        dpr = torch.linspace(0, drop_path_rate, depth, device='cpu').tolist()
        self.blocks = nn.ModuleList([
            AdaLNSelfAttn(i, self.C, self.D, self.num_heads, mlp_ratio=mlp_ratio, drop_path=dpr[i],
                          attn_l2_norm=attn_l2_norm, shared_aln=shared_aln, norm_eps=norm_eps)
            for i in range(depth)])
        self.head_nm = AdaLNBeforeHead(self.C, self.D, norm_eps=norm_eps)
        self.head = ops.Linear(self.C, self.V)
        self.init_std = init_std
        if random_init:          # skipped by the loaders (meta device + assign)
            self.init_weights()

    @property
    def vae(self) -> VQVAE:
        return self._vae[0]

    @property
    def num_scales(self) -> int:
        return len(self.patch_nums)

    # ------------------------------------------------------------------ pieces of the forward passes
    def class_condition(self, label_B: torch.Tensor) -> torch.Tensor:
        """Class embedding (B, D); in training mode labels become the null class with prob. `cond_drop_rate`."""
        if self.training and self.cond_drop_rate > 0:
            drop = torch.rand(label_B.shape[0], device=label_B.device) < self.cond_drop_rate
            label_B = torch.where(drop, self.num_classes, label_B)
        return self.class_emb(label_B)

    def block_condition(self, cond_BD: torch.Tensor) -> torch.Tensor:
        """The condition every block takes: cond_BD itself, or the shared AdaLN projection (shared_aln)."""
        return self.shared_ada_lin(cond_BD)

    def lvl_pos(self) -> torch.Tensor:
        """(1, L, C) level embedding + absolute position embedding of every token."""
        return self.lvl_embed(self.lvl_1L) + self.pos_1LC

    def first_scale_input(self, cond_BD: torch.Tensor, lvl_pos: torch.Tensor | None = None) -> torch.Tensor:
        """The class token(s), input of scale 0: (B, first_l, C)."""
        lvl_pos = self.lvl_pos() if lvl_pos is None else lvl_pos
        B = cond_BD.shape[0]
        return (cond_BD.unsqueeze(1).expand(B, self.first_l, -1) + self.pos_start.expand(B, -1, -1)
                + lvl_pos[:, :self.first_l])

    def scale_input(self, tokens_BlCv: torch.Tensor, si: int, lvl_pos: torch.Tensor | None = None) -> torch.Tensor:
        """Input of scale si from its (B, pn_si^2, Cvae) VAE tokens: word_embed + level/position embeddings."""
        lvl_pos = self.lvl_pos() if lvl_pos is None else lvl_pos
        begin, end = self.begin_ends[si]
        with fp32_region(tokens_BlCv.device.type):
            return self.word_embed(tokens_BlCv.float()) + lvl_pos[:, begin:end]

    def logits(self, x_BLC: torch.Tensor, cond_BD: torch.Tensor) -> torch.Tensor:
        """head(head_nm(x, cond)) in float32 with autocast disabled: (B, l, V)."""
        with fp32_region(x_BLC.device.type):
            return self.head(self.head_nm(x_BLC.float(), cond_BD.float()))

    def kv_caching(self, enable: bool) -> None:
        """Start (empty) or stop (and free) the KV cache of every block."""
        for block in self.blocks:
            block.attn.kv_caching(enable)

    @contextlib.contextmanager
    def kv_cache(self):
        """Context with fresh KV caches in all blocks, turned off and freed on exit (also on errors)."""
        self.kv_caching(True)
        try:
            yield self
        finally:
            self.kv_caching(False)

    # ------------------------------------------------------------------ teacher-forced forward
    def forward(self, label_B: torch.Tensor, x_BLCv: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits (B, L, V): `x_BLCv` (B, L - first_l, Cvae) from `vae.indices_to_var_input`.
        Position t predicts token t (the class token predicts scale 0)."""
        B = x_BLCv.shape[0]
        if x_BLCv.ndim != 3 or x_BLCv.shape[1:] != (self.L - self.first_l, self.Cvae):
            raise ValueError(f"expected x (B, {self.L - self.first_l}, {self.Cvae}), got {tuple(x_BLCv.shape)}")
        if label_B.shape != (B,):
            raise ValueError(f"expected label_B of shape ({B},), got {tuple(label_B.shape)}")
        with fp32_region(x_BLCv.device.type):
            cond_BD = self.class_condition(label_B)
            lvl_pos = self.lvl_pos()
            sos_B1C = cond_BD.unsqueeze(1).expand(B, self.first_l, -1) + self.pos_start.expand(B, -1, -1)
            # same association as first_scale_input/scale_input: (token embedding) + (level + position)
            x_BLC = torch.cat((sos_B1C, self.word_embed(x_BLCv.float())), dim=1) + lvl_pos
        block_cond = self.block_condition(cond_BD)
        for block in self.blocks:
            x_BLC = block(x_BLC, block_cond, self.attn_bias_for_masking)
        return self.logits(x_BLC, cond_BD)

    def forward_cfg(self, label_B: torch.Tensor, x_BLCv: torch.Tensor, cfg: float) -> torch.Tensor:
        """Teacher-forced logits combined with the sampler's per-scale CFG schedule, (B, L, V): what `sample` sees
        (before filtering) when it walks the token path that `x_BLCv` encodes. Runs cond and null rows in one batch."""
        both = self(torch.cat((label_B, torch.full_like(label_B, self.num_classes))), x_BLCv.repeat(2, 1, 1))
        return torch.cat([combine_cfg(both[:, b:e], cfg_strength(cfg, si, self.num_scales))
                          for si, (b, e) in enumerate(self.begin_ends)], dim=1)

    # ------------------------------------------------------------------ sampling
    def _labels(self, B: int, label_B, generator: torch.Generator | None) -> torch.Tensor:
        dev = self.lvl_1L.device
        if label_B is None:
            uniform = torch.full((1, self.num_classes), 1.0 / self.num_classes, device=dev)
            return torch.multinomial(uniform, num_samples=B, replacement=True, generator=generator).reshape(B)
        if isinstance(label_B, int):
            return torch.full((B,), self.num_classes if label_B < 0 else label_B, device=dev, dtype=torch.long)
        label_B = torch.as_tensor(label_B, device=dev).long()
        if label_B.shape != (B,):
            raise ValueError(f"label_B must be an int, None or a ({B},) tensor, got shape {tuple(label_B.shape)}")
        if bool(((label_B < 0) | (label_B > self.num_classes)).any()):
            raise ValueError(f"labels must lie in [0, {self.num_classes}] ({self.num_classes} = null class)")
        return label_B

    @torch.no_grad()
    def sample(self, B: int, label_B=None, cfg: float = 1.5, top_k: int = 0, top_p: float = 0.0,
               g_seed: int | None = None, more_smooth: bool = False, greedy: bool = False,
               keep_logits: bool = False) -> SampleOutput:
        """KV-cached next-scale sampling with classifier-free guidance; returns tokens and f_hat (no decoding).

        Rows [:B] of the transformer batch are conditional, [B:] unconditional (null class); guidance strength
        grows linearly over the scales. `greedy=True` takes the argmax of the CFG logits (no random draws);
        otherwise top-k/top-p filtering then a multinomial draw from a generator seeded with `g_seed` (None: the
        global RNG). `more_smooth` replaces codebook rows by Gumbel-softmax mixtures (visualisation mode)."""
        dev = self.lvl_1L.device
        generator = None
        if g_seed is not None:
            generator = torch.Generator(device=dev)
            generator.manual_seed(g_seed)
        label_B = self._labels(B, label_B, generator)
        vae, SN = self.vae, self.num_scales
        with fp32_region(dev.type):
            cond_2BD = self.class_emb(torch.cat((label_B, torch.full_like(label_B, self.num_classes))))
            lvl_pos = self.lvl_pos()
            x = self.first_scale_input(cond_2BD, lvl_pos)
        block_cond = self.block_condition(cond_2BD)
        codebook_VC = vae.quantize.embedding.weight
        f_hat, idx_list, kept = None, [], []
        modulations = [block.modulation(block_cond) for block in self.blocks]  # the same at every scale
        with self.kv_cache():
            for si, pn in enumerate(self.patch_nums):
                ratio = si / max(SN - 1, 1)
                for block, modulation in zip(self.blocks, modulations):
                    x = block(x, None, None, modulation=modulation)
                logits_BlV = combine_cfg(self.logits(x, cond_2BD), cfg_strength(cfg, si, SN))
                if keep_logits:
                    kept.append(logits_BlV.clone())
                if greedy:
                    idx_Bl = logits_BlV.argmax(dim=-1)
                else:
                    filter_top_k_top_p_(logits_BlV, top_k=top_k, top_p=top_p)
                    idx_Bl = sample_from_logits(logits_BlV, generator)
                if more_smooth:
                    weights_BlV = gumbel_softmax_weights(logits_BlV.mul(1 + ratio), smooth_tau(ratio), generator)
                    h_BlC = weights_BlV @ codebook_VC.unsqueeze(0)
                else:
                    h_BlC = vae.quantize.embedding(idx_Bl)
                h_BChw = h_BlC.transpose(1, 2).reshape(B, self.Cvae, pn, pn)
                f_hat, _, tokens = vae.autoregressive_step(f_hat, h_BChw, si)
                idx_list.append(idx_Bl)
                if tokens is not None:
                    x = self.scale_input(tokens, si + 1, lvl_pos).repeat(2, 1, 1)
        return SampleOutput(idx_Bl=idx_list, f_hat=f_hat, cfg_logits=kept)

    def generate(self, B: int, label_B=None, cfg: float = 1.5, top_k: int = 0, top_p: float = 0.0,
                 g_seed: int | None = None, more_smooth: bool = False,
                 greedy: bool = False) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Sample B images: (10 index maps (B, pn^2), images (B, 3, 256, 256) in [0, 1]).

        `label_B`: (B,) LongTensor, an int for all (negative: null class) or None (drawn with the generator).
        Official FID settings: cfg=1.5, top_k=900, top_p=0.96; `greedy=True` is argmax decoding.
        Runs under `torch.inference_mode()`; the returned tensors are ordinary ones (usable with autograd on)."""
        with torch.inference_mode():
            out = self.sample(B, label_B, cfg=cfg, top_k=top_k, top_p=top_p, g_seed=g_seed,
                              more_smooth=more_smooth, greedy=greedy)
            img = self.vae.fhat_to_img(out.f_hat).add_(1).mul_(0.5)
        # inference tensors would raise when later used in autograd-tracked code: hand out normal copies
        return [t.clone() for t in out.idx_Bl], img.clone()

    # ------------------------------------------------------------------ initialisation
    @torch.no_grad()
    def init_weights(self, init_adaln: float = 0.5, init_adaln_gamma: float = 1e-5, init_head: float = 0.02,
                     init_std: float | None = None) -> None:
        """The official random init (only for training from scratch and tests; loading overwrites everything):
        truncated-normal linears/embeddings with std sqrt(1/(3C)), small head, near-identity blocks."""
        std = self.init_std if init_std is None else init_std
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=std)
                if module.bias is not None:
                    module.bias.zero_()
            elif isinstance(module, nn.Embedding):
                nn.init.trunc_normal_(module.weight, std=std)
        for p in (self.pos_start, self.pos_1LC):
            nn.init.trunc_normal_(p, mean=0, std=std)
        for block in self.blocks:
            block.attn.q_bias.zero_()
            block.attn.v_bias.zero_()
            if block.attn.attn_l2_norm:
                block.attn.scale_mul_1H11.fill_(math.log(4.0))
        self.head.weight.mul_(init_head)
        self.head.bias.zero_()
        self.head_nm.ada_lin[-1].weight.mul_(init_adaln)
        self.head_nm.ada_lin[-1].bias.zero_()
        for block in self.blocks:
            block.attn.proj.weight.div_(math.sqrt(2 * self.depth))
            block.ffn.fc2.weight.div_(math.sqrt(2 * self.depth))
            if self.shared_aln:
                block.ada_gss[:, :, 2:].mul_(init_adaln)
                block.ada_gss[:, :, :2].mul_(init_adaln_gamma)
            else:
                block.ada_lin[-1].weight[2 * self.C:].mul_(init_adaln)
                block.ada_lin[-1].weight[:2 * self.C].mul_(init_adaln_gamma)
                block.ada_lin[-1].bias.zero_()
