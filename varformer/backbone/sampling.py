"""Token sampling helpers of VAR's next-scale sampler: CFG combination, top-k / top-p filtering, the seeded
multinomial draw and the Gumbel-softmax soft embedding of `more_smooth`.

To reproduce the official sampler's tokens for a given seed these helpers draw from the `torch.Generator` in the
same way: exactly one `multinomial` per scale on a contiguous (B*l, V) float32 probability matrix, and in smooth
mode one `exponential_` on a (B, l, V) tensor after it; nothing else touches the generator.
"""
from __future__ import annotations

import torch


def cfg_strength(cfg: float, si: int, num_scales: int) -> float:
    """Guidance strength at scale si: grows linearly from 0 at the first scale to `cfg` at the last."""
    return cfg * si / max(num_scales - 1, 1)


def combine_cfg(logits_2BlV: torch.Tensor, t: float) -> torch.Tensor:
    """Rows [:B] conditional, [B:] unconditional -> (1 + t) * cond - t * uncond, (B, l, V)."""
    B = logits_2BlV.shape[0] // 2
    return (1 + t) * logits_2BlV[:B] - t * logits_2BlV[B:]


def filter_top_k_top_p_(logits_BlV: torch.Tensor, top_k: int = 0, top_p: float = 0.0) -> torch.Tensor:
    """In place: set logits outside the top-k / top-p set to -inf (a value <= 0 disables a filter).

    top-k keeps every logit >= the k-th largest (ties at the threshold survive); top-p then sorts ascending,
    drops entries whose cumulative softmax mass is <= 1 - top_p and always keeps the largest."""
    V = logits_BlV.shape[-1]
    if top_k > 0:
        kth = logits_BlV.topk(min(top_k, V), dim=-1, largest=True, sorted=False)[0].amin(dim=-1, keepdim=True)
        logits_BlV.masked_fill_(logits_BlV < kth, -torch.inf)
    if top_p > 0:
        sorted_logits, sorted_idx = logits_BlV.sort(dim=-1, descending=False)
        sorted_remove = sorted_logits.softmax(dim=-1).cumsum_(dim=-1) <= (1 - top_p)
        sorted_remove[..., -1:] = False
        logits_BlV.masked_fill_(sorted_remove.scatter(-1, sorted_idx, sorted_remove), -torch.inf)
    return logits_BlV


def sample_from_logits(logits_BlV: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One multinomial draw per position from softmax(logits): (B, l, V) -> (B, l) int64."""
    B, l, V = logits_BlV.shape
    probs = logits_BlV.float().softmax(dim=-1).view(-1, V)
    return torch.multinomial(probs, num_samples=1, replacement=True, generator=generator).view(B, l)


def gumbel_softmax_weights(logits_BlV: torch.Tensor, tau: float, generator: torch.Generator | None) -> torch.Tensor:
    """Soft (non-hard) Gumbel-softmax weights over V, with Gumbel noise `-log(Exp(1))` drawn from `generator`."""
    gumbels = -torch.empty_like(logits_BlV, memory_format=torch.legacy_contiguous_format) \
        .exponential_(generator=generator).log()
    return ((logits_BlV + gumbels) / tau).softmax(dim=-1)


def smooth_tau(ratio: float) -> float:
    """Gumbel temperature of `more_smooth` at progress `ratio = si / (SN - 1)`."""
    return max(0.27 * (1 - ratio * 0.95), 0.005)
