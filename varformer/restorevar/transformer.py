"""RestoreVAR's transformer: VAR turned into an image-conditioned next-scale predictor (official models/var.py).

Relative to VAR (``varformer.backbone.var``): no AdaLN (plain affine-free LayerNorms), no absolute positions
(``pos_start``/``pos_1LC`` removed; 2-D RoPE inside the attentions), and a cross-attention in every block to the
degraded image's continuous latent. The parameter and block names are the official ones, so ``restorevar.pth``
maps onto ``var.*`` one to one (``varformer.restorevar.convert``).

    t = RestoreVARTransformer(Cvae=32, vocab_size=4096, patch_nums=PATCH_NUMS_512, depth=16, embed_dim=1024)
    cond = t.condition(z_deg_BCvhw)                      # first token + the blocks' condition keys/values
    logits = t.teacher_forced(x_BLCv, cond)              # (B, L, V) float32, block-causal mask
    roll = t.greedy_rollout(cond, vae)                   # tokens, f_hat, every scale's last-block output

Conditioning (official var.py ``forward`` / ``autoregressive_infer_cfg``), float32 with autocast off:
``c = cond_proj4(z_deg tokens)``; the first token is ``class_emb[1000] + gain * global_embed(mean_n c)`` (the
null-class row; the gain starts at 0); the blocks' condition is ``word_embed_cond(c) + lvl_embed_cond[0]``. The
official code also forms an AdaLN condition from the class row, which nothing reads: not computed here.

Precision: the embeddings, the RoPE rotations, the logits and the quantizer steps run in float32 whatever the
caller's autocast (the official code forces these); the blocks follow the caller's autocast, with the residual
stream kept in float32 (the official code casts it to the autocast dtype).
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import List, Sequence, Tuple

import torch
import torch.nn as nn

from varformer import ops
from varformer.backbone.rope import grid_rope_table, pyramid_rope_table
from varformer.backbone.rope_blocks import RoPESelfCrossBlock
from varformer.backbone.vqvae import VQVAE
from varformer.runtime import fp32_region


@dataclass
class Condition:
    """What the degraded image gives the transformer: the first token and every block's keys/values."""
    sos_B1C: torch.Tensor                                  # (B, 1, C) float32
    kv_BNC: torch.Tensor                                   # (B, N, C) float32 condition tokens (N = last pn^2)
    keys_values: List[Tuple[torch.Tensor, torch.Tensor]]   # per block: (B, H, N, head_dim) keys and values


@dataclass
class RolloutOutput:
    tokens: List[torch.Tensor]    # per scale (B, pn^2) int64, greedy choices
    f_hat: torch.Tensor           # (B, Cvae, G, G) cumulative latent after the last scale, float32
    hidden_BLC: torch.Tensor      # (B, L, C) last-block output of every scale, in scale order (refiner input)


class RestoreVARTransformer(nn.Module):
    def __init__(self, Cvae: int = 32, vocab_size: int = 4096, patch_nums: Sequence[int] = (1, 2, 3, 4, 6, 9, 13,
                 18, 24, 32), depth: int = 16, embed_dim: int = 1024, num_heads: int = 16, num_classes: int = 1000,
                 mlp_ratio: float = 4.0, drop_path_rate: float = 0.0, norm_eps: float = 1e-6,
                 rope_theta: float = 10000.0):
        super().__init__()
        self.Cvae, self.V, self.C, self.depth, self.num_heads = Cvae, vocab_size, embed_dim, depth, num_heads
        self.num_classes = num_classes
        self.patch_nums = tuple(int(p) for p in patch_nums)
        self.L = sum(pn * pn for pn in self.patch_nums)
        self.N = self.patch_nums[-1] ** 2                    # condition tokens: one per cell of the finest grid
        self.begin_ends, cur = [], 0
        for pn in self.patch_nums:
            self.begin_ends.append((cur, cur + pn * pn))
            cur += pn * pn

        self.word_embed = nn.Linear(Cvae, embed_dim)
        self.class_emb = nn.Embedding(num_classes + 1, embed_dim)     # only row num_classes (null class) is used
        self.lvl_embed = nn.Embedding(len(self.patch_nums), embed_dim)
        self.global_embed = nn.Linear(Cvae, embed_dim)
        self.global_embed_gain = nn.Parameter(torch.tensor(0.0))
        self.cond_proj4 = nn.Linear(Cvae, Cvae)
        self.word_embed_cond = nn.Linear(Cvae, embed_dim)
        self.lvl_embed_cond = nn.Embedding(1, embed_dim)
        dpr = torch.linspace(0, drop_path_rate, depth, device="cpu").tolist()
        self.blocks = nn.ModuleList([RoPESelfCrossBlock(embed_dim, num_heads, mlp_ratio, dpr[i], norm_eps)
                                     for i in range(depth)])
        self.head_norm = nn.LayerNorm(embed_dim, eps=norm_eps, elementwise_affine=False)
        self.head = ops.Linear(embed_dim, vocab_size)

        # constants, recomputed rather than stored: the converter checks the official file's copies against them
        self.rope_theta = rope_theta
        for name, t in self.constant_buffers().items():
            self.register_buffer(name, t, persistent=False)

    def constant_buffers(self, device="cpu") -> dict:
        """The official persistent buffers, computed: ``lvl_1L`` (scale of each token), ``attn_bias_for_masking``
        (block-causal additive mask), ``lvl_1L_cond`` (zeros), ``freqs_cis`` / ``freqs_cis_cross`` (RoPE tables)."""
        with torch.device(device):
            lvl = torch.cat([torch.full((pn * pn,), si) for si, pn in enumerate(self.patch_nums)])
            mask = torch.where(lvl.view(self.L, 1) >= lvl.view(1, self.L), 0.0, -torch.inf)
            head_dim = self.C // self.num_heads
            return {"lvl_1L": lvl.view(1, self.L), "attn_bias_for_masking": mask.view(1, 1, self.L, self.L),
                    "lvl_1L_cond": torch.zeros(1, self.N, dtype=torch.long),
                    "freqs_cis": pyramid_rope_table(head_dim, self.patch_nums, self.rope_theta),
                    "freqs_cis_cross": grid_rope_table(head_dim, self.patch_nums[-1], self.rope_theta)}

    def materialise_constants(self) -> None:
        """Recompute the constant buffers on the parameters' device (after building on the meta device)."""
        device = self.word_embed.weight.device
        for name, t in self.constant_buffers("cpu").items():
            setattr(self, name, t.to(device))

    @property
    def num_scales(self) -> int:
        return len(self.patch_nums)

    # ------------------------------------------------------------------ conditioning
    def condition(self, z_deg_BCvhw: torch.Tensor) -> Condition:
        """The degraded latent (VQVAE encoder output before quant_conv, (B, Cvae, G, G)) -> first token and the
        blocks' keys/values."""
        B = z_deg_BCvhw.shape[0]
        with fp32_region(z_deg_BCvhw.device):
            c_BNc = self.cond_proj4(z_deg_BCvhw.float().flatten(2).transpose(1, 2))
            g_B1C = self.global_embed_gain * self.global_embed(c_BNc.mean(dim=1, keepdim=True))
            null = torch.full((B,), self.num_classes, dtype=torch.long, device=z_deg_BCvhw.device)
            sos_B1C = self.class_emb(null).unsqueeze(1) + g_B1C
            kv_BNC = self.word_embed_cond(c_BNc) + self.lvl_embed_cond(self.lvl_1L_cond)
        keys_values = [blk.cross_attn.keys_values(kv_BNC, self.freqs_cis_cross) for blk in self.blocks]
        return Condition(sos_B1C, kv_BNC, keys_values)

    def logits(self, x_BlC: torch.Tensor) -> torch.Tensor:
        """head(LN(x)) in float32 with autocast off: (B, l, V)."""
        with fp32_region(x_BlC.device):
            return self.head(self.head_norm(x_BlC.float()))

    def _blocks(self, x_BLC: torch.Tensor, cond: Condition, attn_bias, rope_Lp: torch.Tensor) -> torch.Tensor:
        for blk, (k, v) in zip(self.blocks, cond.keys_values):
            x_BLC = blk(x_BLC, attn_bias, rope_Lp, k, v)
        return x_BLC

    # ------------------------------------------------------------------ teacher forcing (stage 1)
    def teacher_forced(self, x_BLCv: torch.Tensor, cond: Condition) -> torch.Tensor:
        """Logits (B, L, V) on the GT tokens' teacher-forcing input ``x_BLCv`` (B, L - 1, Cvae)
        (``vae.indices_to_var_input``); position t predicts token t, the first token predicts scale 0."""
        B = x_BLCv.shape[0]
        if x_BLCv.ndim != 3 or x_BLCv.shape[1:] != (self.L - 1, self.Cvae):
            raise ValueError(f"expected x (B, {self.L - 1}, {self.Cvae}), got {tuple(x_BLCv.shape)}")
        with fp32_region(x_BLCv.device):
            x_BLC = torch.cat((cond.sos_B1C.float(), self.word_embed(x_BLCv.float())), dim=1)
            x_BLC = x_BLC + self.lvl_embed(self.lvl_1L.expand(B, -1))
        x_BLC = self._blocks(x_BLC, cond, self.attn_bias_for_masking, self.freqs_cis)
        return self.logits(x_BLC)

    # ------------------------------------------------------------------ greedy sampling (inference, stage 2)
    @contextlib.contextmanager
    def kv_cache(self):
        for blk in self.blocks:
            blk.attn.kv_caching(True)
        try:
            yield self
        finally:
            for blk in self.blocks:
                blk.attn.kv_caching(False)

    def greedy_rollout(self, cond: Condition, vae: VQVAE) -> RolloutOutput:
        """Argmax at every scale, no CFG, KV-cached (official ``autoregressive_infer_cfg``). Each scale runs the
        blocks on its own tokens with its RoPE rows and no mask; the block output is kept for the refiner."""
        device = cond.sos_B1C.device
        with fp32_region(device):
            lvl_pos_1LC = self.lvl_embed(self.lvl_1L)
            x_BlC = cond.sos_B1C.float() + lvl_pos_1LC[:, :1]
        f_hat, tokens, hidden = None, [], []
        with self.kv_cache():
            for si, pn in enumerate(self.patch_nums):
                begin, end = self.begin_ends[si]
                x_BlC = self._blocks(x_BlC, cond, None, self.freqs_cis[begin:end])
                hidden.append(x_BlC)
                idx_Bl = self.logits(x_BlC).argmax(dim=-1)
                tokens.append(idx_Bl)
                f_hat, _, nxt = vae.autoregressive_step(f_hat, vae.quantize.embed_tokens(idx_Bl, si), si)
                if nxt is not None:
                    b, e = self.begin_ends[si + 1]
                    with fp32_region(device):
                        x_BlC = self.word_embed(nxt.float()) + lvl_pos_1LC[:, b:e]
        return RolloutOutput(tokens, f_hat, torch.cat(hidden, dim=1))

    # ------------------------------------------------------------------ initialisation
    @torch.no_grad()
    def init_weights(self, init_head: float = 0.02, init_std: float | None = None) -> None:
        """The official stage-1 initialisation (VAR ``init_weights`` as train.py calls it) before ``var_d16.pth`` is
        loaded over it: truncated-normal Linear/Embedding weights with std sqrt(1/(3C)) (bounds +-2), zero biases,
        LayerNorms 1/0, head x init_head, each block's attn.proj and ffn.fc2 / sqrt(2 depth). The bare parameters keep
        their constructor values (gains 0, scale_mul ln 4, q/v biases 0)."""
        std = math.sqrt(1 / self.C / 3) if init_std is None else init_std
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.trunc_normal_(m.weight, std=std)
                if getattr(m, "bias", None) is not None:
                    m.bias.zero_()
            elif isinstance(m, nn.LayerNorm) and m.elementwise_affine:
                m.weight.fill_(1.0)
                m.bias.zero_()
        self.head.weight.mul_(init_head)
        self.head.bias.zero_()
        for blk in self.blocks:
            blk.attn.proj.weight.div_(math.sqrt(2 * self.depth))
            blk.ffn.fc2.weight.div_(math.sqrt(2 * self.depth))
