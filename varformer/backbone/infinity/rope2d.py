"""2-D rotary position embedding of Infinity in the mode the released models use (official infinity/models/basic.py
``precompute_rope2d_freqs_grid`` with ``rope2d_normalized_by_hw=2``, ``apply_rotary_emb``).

One table serves every token sequence of an aspect ratio: it is built from the **1M schedule** (13 square scales up
to 64x64, ``SCHEDULE_1M``), whatever schedule the model runs (0.25M: its first 10 scales). Token (i, j) of a
``pn x pn`` scale sits on a 128x128 frequency grid at ``(round(i * 64 / pn), round(j * 64 / pn))`` (float32
arithmetic, round half to even, as the official code). A sequence of L tokens takes the table's rows ``0 .. L-1``:

- the first ``sum(pn^2)`` rows are the scales of the schedule (row 0, the start token, has angle 0);
- a longer sequence runs on into the **next scale of the 1M table**. VARestorer's long input (the 0.25M pyramid +
  an extra 32x32 block, 3,545 tokens) therefore gives token t of the extra block the position of token t of the
  40x40 scale, ``(round(floor(t / 40) * 1.6), round((t mod 40) * 1.6))``, not its own cell of the 32x32 grid. The
  released weights were trained with this (docs/varestorer.md, D3).

A head vector of ``d`` channels is read as ``d / 2`` consecutive pairs ``(x[2t], x[2t + 1])``; pair ``t < d / 4``
turns by ``row * f_t``, pair ``d / 4 + t`` by ``col * f_t`` with ``f_t = 10000 ** (-2t / (d / 2))``.

    cos, sin = rope2d_table(head_dim=128)           # (10521, 64) each, float32
    q, k = apply_rope2d(q_BHLd, k_BHLd, cos[:L], sin[:L])
"""
from __future__ import annotations

from typing import Sequence, Tuple

import torch

SCHEDULE_1M = (1, 2, 4, 6, 8, 12, 16, 20, 24, 32, 40, 48, 64)   # square scales of the 1M schedule (h/w = 1)
SCHEDULE_025M = SCHEDULE_1M[:10]                                 # 512 px: the released model's schedule
FREQUENCY_GRID = 128                                             # 2048 // 16 positions per axis


def rope2d_positions(schedule: Sequence[int] = SCHEDULE_1M) -> Tuple[torch.Tensor, torch.Tensor]:
    """(rows, cols), int64 (sum pn^2,), the grid position of every token of ``schedule`` in sequence order."""
    last = schedule[-1]
    rows, cols = [], []
    for pn in schedule:
        # int64 arange times a Python float is float32: the official rounding happens on float32 values
        pos = (torch.arange(pn) * (last / pn)).round().long()
        rows.append(pos[:, None].expand(pn, pn).reshape(-1))
        cols.append(pos[None, :].expand(pn, pn).reshape(-1))
    return torch.cat(rows), torch.cat(cols)


def rope2d_table(head_dim: int, schedule: Sequence[int] = SCHEDULE_1M, base: float = 10000.0,
                 grid: int = FREQUENCY_GRID) -> Tuple[torch.Tensor, torch.Tensor]:
    """(cos, sin), each (sum pn^2, head_dim / 2) float32, built on the CPU."""
    if head_dim % 4:
        raise ValueError(f"2-D RoPE needs a head dimension divisible by 4, got {head_dim}")
    half = head_dim // 2
    inv_freq = 1.0 / (base ** (torch.arange(0, half, 2, dtype=torch.int64).float() / half))   # (head_dim / 4,)
    freqs = torch.outer(torch.arange(grid, dtype=torch.int64).float(), inv_freq)           # (grid, head_dim / 4)
    # positions run up to schedule[-1] - 1 (the finest scale's own grid); checked on the schedule itself, not on
    # the position tensor, so the table also builds under fake tensors (FLOP counting)
    if schedule[-1] > grid:
        raise ValueError(f"schedule {tuple(schedule)} reaches position {schedule[-1] - 1}, beyond the {grid} grid")
    rows, cols = rope2d_positions(schedule)
    angles = torch.cat([freqs[rows], freqs[cols]], dim=-1)                                  # (L, head_dim / 2)
    return angles.cos(), angles.sin()


def apply_rope2d(q_BHLd: torch.Tensor, k_BHLd: torch.Tensor, cos_Lh: torch.Tensor, sin_Lh: torch.Tensor
                 ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Rotate the pairs ``(x[2t], x[2t + 1])`` of q and k by the angle of each token's row; float32 results (the
    official rotation runs with autocast off on float32 q and k)."""
    L, d = q_BHLd.shape[-2], q_BHLd.shape[-1]
    if cos_Lh.shape != (L, d // 2) or sin_Lh.shape != (L, d // 2):
        raise ValueError(f"RoPE rows of shape {tuple(cos_Lh.shape)} do not fit {L} tokens of head dim {d}")

    def rotate(x: torch.Tensor) -> torch.Tensor:
        pairs = x.float().reshape(*x.shape[:-1], d // 2, 2)
        x0, x1 = pairs[..., 0], pairs[..., 1]
        return torch.stack((cos_Lh * x0 - sin_Lh * x1, sin_Lh * x0 + cos_Lh * x1), dim=-1).reshape(x.shape)

    return rotate(q_BHLd), rotate(k_BHLd)
