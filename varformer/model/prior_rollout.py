"""Prior collection: the greedy VAR rollout conditioned on the degraded tokens (docs/architecture.md, step 4; the VAR
loop of the official ``VarFormer2`` forward in varformer_arch.py).

No teacher forcing: at every scale the VAR input is built from the model's own previous (greedy) choices, and after
each of the first ``n_cross`` blocks the hidden state is replaced by a cross-attention to the degraded-token map of
the same scale. Outputs: the 10 greedy index maps, the CFG-combined logits (the stage-1 CE target), the cumulative
``f_hat`` and the per-scale increments ``phi(up(codebook[idx]))`` -- the scale priors of the DAE.

Work that is identical for the two CFG halves is done once: all rows use the null class and identical inputs, so
block 0 (whose KV cache only ever sees those identical inputs) and the cross-attention queries run on B rows; the
halves first differ after the first (official-layout) cross-attention. With the ``standard`` head layout the halves
never differ, so the rollout runs B rows throughout and the CFG combination is the identity.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence

import torch
from torch import nn

from varformer.model.cross_attention import CrossAttentionInjection
from varformer.runtime import fp32_region


@dataclass
class RolloutOutput:
    tokens: List[torch.Tensor]     # 10 x (B, pn^2) int64, greedy choices
    logits: torch.Tensor           # (B, L, V) CFG-combined logits (float32)
    f_hat: torch.Tensor            # (B, Cv, 16, 16) cumulative reconstruction after the last scale
    priors: torch.Tensor           # (B, SN, Cv, 16, 16) per-scale increments (not cumulative)



def greedy_rollout(var: nn.Module, cross_blocks: Sequence[CrossAttentionInjection], x_lq_BLc: torch.Tensor,
                   cfg: float, head_layout: str, share_halves: bool = True) -> RolloutOutput:
    """``x_lq_BLc`` (B, L - 1, Cv): teacher-forcing-style tokens of the *degraded* latent's quantisation
    (``vae.indices_to_var_input``); ``cfg`` the CFG strength (grows linearly over the scales).

    ``share_halves=False`` runs the work as the official code does: both CFG halves (2B rows) through every block
    from the first one, the cross-attention queries computed per row, each block's AdaLN modulation at every
    scale. Same outputs, more work: the benchmark's reference path."""
    B = x_lq_BLc.shape[0]
    device = x_lq_BLc.device
    vae = var.vae
    n_scales = var.num_scales
    n_cross = len(cross_blocks)
    two_halves = head_layout == "official" and n_cross > 0
    if n_cross > len(var.blocks):
        raise ValueError(f"{n_cross} cross-attention blocks but only {len(var.blocks)} VAR blocks")

    with fp32_region(device):
        # every row is the null class (no label anywhere), so one condition row serves all rows
        cond_1D = var.class_emb(torch.full((1,), var.num_classes, dtype=torch.long, device=device))
        lvl_pos = var.lvl_pos()
        first_1lC = var.first_scale_input(cond_1D, lvl_pos)
        # degraded-token maps of every scale (scale 0: the class token itself), B rows
        d_BLC = torch.cat([first_1lC.expand(B, -1, -1),
                           var.word_embed(x_lq_BLc.float()) + lvl_pos[:, first_1lC.shape[1]:]], dim=1)
    block_cond = var.block_condition(cond_1D)
    # the condition is the same at every scale: each block's AdaLN modulation once, not once per scale
    modulations = [blk.modulation(block_cond) if share_halves else None for blk in var.blocks]
    rows = B if share_halves or not two_halves else 2 * B
    if rows != B:
        d_BLC = d_BLC.repeat(2, 1, 1)

    tokens, logits_all, priors = [], [], []
    f_hat = None
    x_BlC = first_1lC.expand(rows, -1, -1)
    with var.kv_cache():
        for si in range(n_scales):
            begin, end = var.begin_ends[si]
            d_BlC = d_BLC[:, begin:end]
            z = x_BlC
            for j, blk in enumerate(var.blocks):
                z = blk(z, block_cond, None, modulation=modulations[j])
                if j < n_cross:
                    if two_halves and z.shape[0] == B:
                        z = torch.cat([z, z], dim=0)   # the halves split here: the re-cut mixes them
                    if rows == B:
                        z = cross_blocks[j](None, z, q_RHlc=cross_blocks[j].query(d_BlC), n_images=B)
                    else:
                        z = cross_blocks[j](d_BlC, z, n_images=B)
            logits = var.logits(z, cond_1D)                                      # (R, l, V) float32
            if two_halves:
                t = cfg * si / (n_scales - 1)
                logits = (1 + t) * logits[:B] - t * logits[B:]
            logits_all.append(logits)
            idx_Bl = logits.argmax(dim=-1)
            tokens.append(idx_Bl)
            with torch.no_grad():
                f_hat, prior, next_tokens = vae.autoregressive_step(f_hat, vae.quantize.embed_tokens(idx_Bl, si), si)
            priors.append(prior)
            if next_tokens is not None:
                x_BlC = var.scale_input(next_tokens, si + 1, lvl_pos)
                if rows != B:
                    x_BlC = x_BlC.repeat(2, 1, 1)
    return RolloutOutput(tokens=tokens, logits=torch.cat(logits_all, dim=1), f_hat=f_hat,
                         priors=torch.stack(priors, dim=1))
