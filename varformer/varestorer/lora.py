"""VARestorer's LoRA: the adapter layer the release injects (cloneofsimo/lora ``LoraInjectedLinear``, as
tools/run_varestorer.py ``load_infinity`` calls ``inject_trainable_lora(block_chunks, {"CrossAttention",
"SelfAttention"}, r=32)``), with its exact key names, and its merge into the weights for inference.

    y = linear(x) + lora_up(lora_down(x))          # scale 1, no dropout, no alpha / r factor

``lora_down`` starts as N(0, (1/r)^2), ``lora_up`` at zero. The release wraps every ``nn.Linear`` inside the
attentions of the blocks, five per block: ``sa.mat_qkv``, ``sa.proj``, ``ca.mat_q``, ``ca.mat_kv``, ``ca.proj``
(the attentive text pool is outside the blocks and keeps its plain linears). Keys move under the wrapper:
``...sa.mat_qkv.linear.weight``, ``...sa.mat_qkv.lora_down.weight``, ``...sa.mat_qkv.lora_up.weight``.

Injection also switches every block's text cross-attention to run without the pre-trained value bias
(``ca.use_value_bias = False``): the release's ``CrossAttention`` takes its keys/values from the wrapped linear
alone and skips ``(0, v_bias)`` once ``mat_kv`` is a LoRA module; the released weights were trained that way
(docs/varestorer.md, D2). The self-attention keeps its ``(q_bias, 0, v_bias)``.

``merge_lora`` folds ``W + up @ down`` into plain linears (float32): the same outputs to rounding, one matmul fewer
per linear; the keys go back to ``...sa.mat_qkv.weight`` (a merged model is for inference; it is not the release's
layout any more).
"""
from __future__ import annotations

from typing import List

import torch
import torch.nn as nn

from varformer import ops
from varformer.backbone.infinity.transformer import Infinity

LORA_TARGETS = ("sa.mat_qkv", "sa.proj", "ca.mat_q", "ca.mat_kv", "ca.proj")


class LoraLinear(nn.Module):
    def __init__(self, linear: nn.Linear, rank: int):
        super().__init__()
        if rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {rank}")
        self.rank = rank
        self.linear = linear
        self.lora_down = ops.Linear(linear.in_features, rank, bias=False)
        self.lora_up = ops.Linear(rank, linear.out_features, bias=False)
        nn.init.normal_(self.lora_down.weight, std=1 / rank)
        nn.init.zeros_(self.lora_up.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x) + self.lora_up(self.lora_down(x))

    def merged(self) -> nn.Linear:
        """A plain linear computing ``linear(x) + up(down(x))``: weight ``W + up @ down`` (float32)."""
        lin = self.linear
        with torch.device("meta"):     # no random init of a weight that is replaced at once
            out = ops.Linear(lin.in_features, lin.out_features, bias=lin.bias is not None,
                             activation=getattr(lin, "activation", None))
        with torch.no_grad():
            delta = self.lora_up.weight.float() @ self.lora_down.weight.float()
            weight = (lin.weight.float() + delta).to(lin.weight.dtype)
        out.weight = nn.Parameter(weight, requires_grad=lin.weight.requires_grad)
        if lin.bias is not None:
            out.bias = lin.bias
        return out


def _parent(block: nn.Module, path: str):
    owner, attr = path.split(".")
    return getattr(block, owner), attr


def inject_lora(infinity: Infinity, rank: int) -> List[str]:
    """Wrap the five attention linears of every block (in place); returns the wrapped modules' names."""
    names = []
    blocks = infinity.iter_blocks()
    prefix = "block_chunks.{}.module.{}." if infinity.num_chunks > 1 else "blocks.{}."
    per = len(blocks) // infinity.num_chunks
    for i, blk in enumerate(blocks):
        for path in LORA_TARGETS:
            owner, attr = _parent(blk, path)
            lin = getattr(owner, attr)
            if isinstance(lin, LoraLinear):
                raise ValueError("LoRA is already injected")
            setattr(owner, attr, LoraLinear(lin, rank))
            where = prefix.format(i // per, i % per) if infinity.num_chunks > 1 else prefix.format(i)
            names.append(where + path)
        blk.ca.use_value_bias = False
    return names


def merge_lora(infinity: Infinity) -> int:
    """Replace every ``LoraLinear`` of the blocks by its merged plain linear; returns how many were merged."""
    n = 0
    for blk in infinity.iter_blocks():
        for path in LORA_TARGETS:
            owner, attr = _parent(blk, path)
            lin = getattr(owner, attr)
            if isinstance(lin, LoraLinear):
                setattr(owner, attr, lin.merged())
                n += 1
    return n


def lora_parameters(module: nn.Module) -> List[nn.Parameter]:
    """The trainable tensors: every ``lora_down`` / ``lora_up`` weight."""
    return [p for name, p in module.named_parameters() if ".lora_down." in name or ".lora_up." in name]


def lora_infinity(rank: int, **infinity_kwargs) -> Infinity:
    """An ``Infinity`` with LoRA of ``rank`` injected (the release's student); ``rank=0``: the plain model."""
    model = Infinity(**infinity_kwargs)
    if rank:
        inject_lora(model, rank)
    return model
