"""2-D rotary position embedding (RoPE) on VAR's multi-scale token pyramid, as RestoreVAR uses it (official
models/basic_var.py, which takes it from VARSR).

Every token gets a (row, column) position on the grid of the finest scale: token (i, j) of a ``pn x pn`` scale sits
at ``(i / pn * G, j / pn * G)`` with ``G = patch_nums[-1]`` (its top-left corner, computed in float32 exactly in that
order). A head vector of ``d`` channels is read as ``d / 2`` complex numbers from consecutive pairs
``(2m, 2m + 1)``; pair ``m < d / 4`` turns by ``row * f_m``, pair ``d / 4 + m`` by ``col * f_m``, with
``f_m = 1 / theta ** (4m / d)``.

    table = pyramid_rope_table(head_dim=64, patch_nums=(1, 2, 3, 4, 6, 9, 13, 18, 24, 32))   # (2240, 32) complex64
    cross = grid_rope_table(head_dim=64, side=32)                                           # (1024, 32) complex64
    q = apply_rope(q_BHLd, table[begin:end])        # float32 rotation, result in q's dtype
"""
from __future__ import annotations

from typing import Sequence

import torch


def rope_frequencies(head_dim: int, theta: float = 10000.0) -> torch.Tensor:
    """The ``head_dim / 4`` rotation frequencies (float32), in the official order of operations."""
    if head_dim % 4:
        raise ValueError(f"2-D RoPE needs a head dimension divisible by 4, got {head_dim}")
    return 1.0 / (theta ** (torch.arange(0, head_dim, 4)[: head_dim // 4].float() / head_dim))


def _table(rows: torch.Tensor, cols: torch.Tensor, head_dim: int, theta: float) -> torch.Tensor:
    freqs = rope_frequencies(head_dim, theta)
    angle_rows = torch.outer(rows, freqs).float()
    angle_cols = torch.outer(cols, freqs).float()
    rot_rows = torch.polar(torch.ones_like(angle_rows), angle_rows)
    rot_cols = torch.polar(torch.ones_like(angle_cols), angle_cols)
    return torch.cat([rot_rows, rot_cols], dim=1)                      # (N, head_dim / 2) complex64


def pyramid_positions(patch_nums: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, cols), float32 (L,), of every token of the pyramid in sequence order (scale by scale, row-major)."""
    grid = patch_nums[-1]
    rows, cols = [], []
    for pn in patch_nums:
        i, j = torch.meshgrid(torch.arange(pn), torch.arange(pn), indexing='ij')
        rows.append(i.flatten() / pn * grid)
        cols.append(j.flatten() / pn * grid)
    return torch.cat(rows), torch.cat(cols)


def pyramid_rope_table(head_dim: int, patch_nums: Sequence[int], theta: float = 10000.0) -> torch.Tensor:
    """(L, head_dim / 2) complex64: the rotation of every token of the pyramid (official ``freqs_cis``)."""
    rows, cols = pyramid_positions(patch_nums)
    return _table(rows, cols, head_dim, theta)


def grid_rope_table(head_dim: int, side: int, theta: float = 10000.0) -> torch.Tensor:
    """(side^2, head_dim / 2) complex64: the rotation of every cell of one ``side x side`` grid, row-major, in the
    same frame as the pyramid's finest scale (official ``freqs_cis_cross``)."""
    return pyramid_rope_table(head_dim, (side,), theta)


def apply_rope(x_BHLd: torch.Tensor, table_Lp: torch.Tensor) -> torch.Tensor:
    """Rotate the consecutive channel pairs of every head vector by the table's row of its token; computed in
    float32 (the official code rotates ``x.float()``), returned in ``x``'s dtype."""
    B, H, L, d = x_BHLd.shape
    if table_Lp.shape != (L, d // 2):
        raise ValueError(f"RoPE table of shape {tuple(table_Lp.shape)} does not fit {L} tokens of head dim {d}")
    x_c = torch.view_as_complex(x_BHLd.float().reshape(B, H, L, d // 2, 2))
    return torch.view_as_real(x_c * table_Lp).reshape(B, H, L, d).to(x_BHLd.dtype)
