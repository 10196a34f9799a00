"""Infinity, the bitwise text-to-image next-scale transformer (official infinity/models/infinity.py ``Infinity``
with the released 2B settings: ``shared_aln``, ``head_aln``, ``use_bit_label``, ``rope2d_each_sa_layer``,
``rope2d_normalized_by_hw=2``, ``add_lvl_embeding_only_first_block``, cosine attention), and the bidirectional
long-input forward VARestorer's student adds (``BInfinity.forward``, same parameters).

    m = Infinity(depth=32, embed_dim=2048, num_heads=16, text_channels=2048, block_chunks=8)
    text = PaddedText.from_list([t5_rows_0, t5_rows_1])
    logits = m(text, x_BLC)                     # x: (B, L - 1, 32) teacher-forcing input -> (B, L, 64), block-causal
    logits = m(text, x_long_BLC)                # x: (B, L - 1 + G^2, 32) long input -> (B, L, 64), full attention

``L = sum pn^2`` over the schedule (2,521 at 512 px, position 0 the start token), ``G = pn[-1]``. The input layout
decides the mode exactly as the official code does: a sequence of L tokens (start token included) is the
teacher-forcing pass of Infinity with its block-causal mask (scale k sees scales <= k); a sequence of
``L + G^2`` tokens is BInfinity's long input: every token attends to every token, the extra G x G block gets level
embedding index K (10 at 512 px) and RoPE rows of the next scale of the 1M table (docs/varestorer.md, D3); logits
are returned for the first L positions only.

Pipeline of one pass (float32 unless said): ``c = text_norm(text)``; ``cond = text_proj_for_sos(c)`` (B, D),
the start token ``cond + pos_start`` and the AdaLN condition; ``gss = shared_ada_lin(cond)`` (B, 1, 6, C); the
blocks' keys/values ``text_proj_for_ca(c)``; ``x = [sos, word_embed(x_in)] + lvl_embed[scale]``; the blocks (the
caller's autocast); ``logits = head(head_nm(x, cond))`` in float32.
"""
from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import torch
import torch.nn as nn

from varformer import ops
from varformer.backbone.infinity.blocks import BlockChunk, InfinityBlock
from varformer.backbone.infinity.rope2d import SCHEDULE_025M, SCHEDULE_1M, rope2d_table
from varformer.backbone.infinity.text_pool import FastRMSNorm, PaddedText, TextAttentivePool
from varformer.backbone.transformer_blocks import AdaLNBeforeHead
from varformer.runtime import fp32_region

NUM_LEVEL_EMBEDDINGS = 15


def check_schedule(patch_nums: Sequence[int]) -> Tuple[int, ...]:
    """A schedule must be a prefix of the 1M schedule that leaves room for the long input's extra block."""
    pn = tuple(int(p) for p in patch_nums)
    if len(pn) < 2 or pn != SCHEDULE_1M[:len(pn)] or len(pn) >= len(SCHEDULE_1M):
        raise ValueError(f"patch_nums must be a prefix of the 1M schedule {SCHEDULE_1M} with 2 to "
                         f"{len(SCHEDULE_1M) - 1} scales, got {pn}")
    return pn


def scale_index(patch_nums: Sequence[int], long_input: bool) -> torch.Tensor:
    """(L,) int64: the level-embedding index of every token (the long input's extra block gets index K)."""
    sizes = [p * p for p in patch_nums] + ([patch_nums[-1] ** 2] if long_input else [])
    return torch.cat([torch.full((n,), i, dtype=torch.int64) for i, n in enumerate(sizes)])


class Infinity(nn.Module):
    def __init__(self, depth: int = 32, embed_dim: int = 2048, num_heads: int = 16, text_channels: int = 2048,
                 text_maxlen: int = 512, block_chunks: int = 8, codebook_dim: int = 32, mlp_ratio: float = 4.0,
                 patch_nums: Sequence[int] = SCHEDULE_025M, drop_path_rate: float = 0.0, norm_eps: float = 1e-6):
        super().__init__()
        if depth < 1 or block_chunks < 1 or depth % block_chunks:
            raise ValueError(f"depth {depth} must be a positive multiple of block_chunks {block_chunks}")
        self.depth, self.C, self.num_heads, self.codebook_dim = depth, embed_dim, num_heads, codebook_dim
        self.text_channels, self.text_maxlen, self.num_chunks = text_channels, text_maxlen, block_chunks
        self.patch_nums = check_schedule(patch_nums)
        self.L = sum(p * p for p in self.patch_nums)
        self.V = 2 * codebook_dim                      # bitwise head: two logits per bit
        C = embed_dim
        # text-conditioning path (official names)
        # the null text (CFG, text drop); always read from a checkpoint (its seeded official init is not redone)
        self.cfg_uncond = nn.Parameter(torch.zeros(text_maxlen, text_channels))
        self.text_norm = FastRMSNorm(text_channels, eps=norm_eps)
        self.text_proj_for_sos = TextAttentivePool(text_channels, C)
        self.text_proj_for_ca = nn.Sequential(ops.Linear(text_channels, C, activation="gelu_tanh"), nn.Identity(),
                                              ops.Linear(C, C))
        # input, positions, modulation
        self.pos_start = nn.Parameter(torch.zeros(1, 1, C))
        self.lvl_embed = nn.Embedding(NUM_LEVEL_EMBEDDINGS, C)
        self.word_embed = ops.Linear(codebook_dim, C)
        self.shared_ada_lin = nn.Sequential(nn.SiLU(inplace=False), ops.Linear(C, 6 * C))
        # linearly increasing drop path (Python floats: the model may be built on the meta device)
        dpr = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
        blocks = [InfinityBlock(C, num_heads, C, mlp_ratio, dpr[i], norm_eps) for i in range(depth)]
        per = depth // block_chunks
        if block_chunks > 1:
            self.block_chunks = nn.ModuleList(BlockChunk(blocks[i * per:(i + 1) * per]) for i in range(block_chunks))
        else:
            self.blocks = nn.ModuleList(blocks)
        self.head_nm = AdaLNBeforeHead(C, C, norm_eps)
        self.head = ops.Linear(C, self.V)
        self._rope: Dict[str, Tuple[torch.Tensor, torch.Tensor]] = {}

    # ------------------------------------------------------------------ structure
    def iter_blocks(self) -> List[InfinityBlock]:
        if self.num_chunks > 1:
            return [b for chunk in self.block_chunks for b in chunk.module]
        return list(self.blocks)

    @property
    def long_length(self) -> int:
        """Tokens of the long input, start token included (3,545 at 512 px)."""
        return self.L + self.patch_nums[-1] ** 2

    def rope(self, device: torch.device) -> Tuple[torch.Tensor, torch.Tensor]:
        """The (cos, sin) table of the 1M schedule on ``device``, cached (not a buffer: never in a state dict)."""
        key = str(device)
        if key not in self._rope:
            with torch.inference_mode(False):   # a cache made under inference_mode could not be used in training
                cos, sin = rope2d_table(self.C // self.num_heads, SCHEDULE_1M)
                self._rope[key] = (cos.to(device), sin.to(device))
        return self._rope[key]

    # ------------------------------------------------------------------ text
    def drop_text(self, text: PaddedText, drop_B: torch.Tensor) -> PaddedText:
        """A new ``PaddedText`` whose rows of the images with ``drop_B`` True are ``cfg_uncond[:L_i]`` (the official
        text drop, which overwrites the caller's tensor in place; here the input is left untouched)."""
        rows = text.features_BTC.clone()
        for i, (drop, n) in enumerate(zip(drop_B.tolist(), text.lengths)):
            if drop:
                if n > self.text_maxlen:
                    raise ValueError(f"text of {n} rows is longer than cfg_uncond ({self.text_maxlen} rows)")
                rows[i, :n] = self.cfg_uncond[:n].to(rows)
        return text.with_rows(rows)

    def condition(self, text: PaddedText) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(cond_BD, gss_B16C, text keys/values source (B, T, C)), float32 whatever the caller's autocast."""
        if text.features_BTC.shape[-1] != self.text_channels:
            raise ValueError(f"text features of width {text.features_BTC.shape[-1]}, the model takes "
                             f"{self.text_channels}")
        with fp32_region(text.features_BTC.device):
            c = self.text_norm(text.features_BTC.float())
            cond_BD = self.text_proj_for_sos(c, text.mask_BT).float()
            kv_BTC = self.text_proj_for_ca(c).float()
            gss = self.shared_ada_lin(cond_BD).float().view(-1, 1, 6, self.C)
        return cond_BD, gss, kv_BTC

    # ------------------------------------------------------------------ passes
    def embed(self, x_BLCv: torch.Tensor, cond_BD: torch.Tensor, long_input: bool) -> torch.Tensor:
        """[start token, word_embed(x)] + the level embeddings, float32 (B, L_in, C)."""
        with fp32_region(x_BLCv.device):
            sos = cond_BD[:, None] + self.pos_start.float()
            x = torch.cat((sos, self.word_embed(x_BLCv.float())), dim=1)
            idx = scale_index(self.patch_nums, long_input).to(x.device)
            return x + self.lvl_embed(idx)[None].float()

    def causal_mask(self, device: torch.device) -> torch.Tensor:
        """(L, L) bool: a token of scale k sees the tokens of scales <= k (official ``attn_bias_for_masking``)."""
        d = scale_index(self.patch_nums, False).to(device)
        return d[:, None] >= d[None, :]

    def logits(self, h_BLC: torch.Tensor, cond_BD: torch.Tensor) -> torch.Tensor:
        with fp32_region(h_BLC.device):
            return self.head(self.head_nm(h_BLC.float(), cond_BD.float())).float()

    def forward(self, text: PaddedText, x_BLCv: torch.Tensor) -> torch.Tensor:
        """Logits (B, L, 2 * codebook_dim), float32. ``x_BLCv``: (B, L - 1, codebook_dim) teacher-forcing input
        (block-causal) or (B, L - 1 + G^2, codebook_dim) long input (full attention)."""
        n = x_BLCv.shape[1] + 1
        if x_BLCv.ndim != 3 or x_BLCv.shape[-1] != self.codebook_dim or n not in (self.L, self.long_length):
            raise ValueError(f"expected (B, {self.L - 1} or {self.long_length - 1}, {self.codebook_dim}) input "
                             f"tokens, got {tuple(x_BLCv.shape)}")
        if x_BLCv.shape[0] != text.features_BTC.shape[0]:
            raise ValueError(f"{x_BLCv.shape[0]} images but {text.features_BTC.shape[0]} texts")
        long_input = n == self.long_length
        cond_BD, gss, kv_BTC = self.condition(text)
        x = self.embed(x_BLCv, cond_BD, long_input)
        attn_mask = None if long_input else self.causal_mask(x.device)
        rope = self.rope(x.device)
        for blk in self.iter_blocks():
            x = blk(x, gss, kv_BTC, text.mask_BT, rope, attn_mask)
        return self.logits(x[:, :self.L], cond_BD)

    def extra_repr(self) -> str:
        return (f"depth={self.depth}, embed_dim={self.C}, num_heads={self.num_heads}, "
                f"text_channels={self.text_channels}, patch_nums={self.patch_nums}, block_chunks={self.num_chunks}")
