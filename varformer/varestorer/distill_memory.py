"""Memory of one distillation step (``varformer train distill --dry-run``), counted without computing: the
student (and the teacher, unless it shares the student's frozen tensors) built on the meta device, materialised as
fake tensors, and one training forward run on them under the run's autocast (``varformer.methods.memory``).

- state: every frozen tensor at its storage dtype (bf16 blocks with ``frozen_dtype=bf16``), the VAE, SwinIR and
  LPIPS in float32; each trainable (LoRA) parameter 20 bytes: float32 weight, gradient, two Adam moments, EMA;
- activations per image: what autograd saves for backward. With ``train.grad_checkpointing`` the student's blocks
  and the frozen decoder / LPIPS units keep only their inputs, and one unit at a time is recomputed in backward:
  saved outside the units + the units' inputs + the largest unit. Attributed per unit in one un-checkpointed run
  (forward hooks), not by tracing ``torch.utils.checkpoint``, which keeps its inputs outside autograd's hooks.
  Transient buffers of no-grad passes (teacher, encoders) and of attention kernels are not counted.

    state, per_image, counts = estimate_distill_memory(cfg, micro=1, precision="bf16")
"""
from __future__ import annotations

from typing import Dict, List, Tuple

import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode

from varformer.backbone.infinity.text_pool import PaddedText
from varformer.runtime import autocast, fp32_region
from varformer.varestorer.distill_models import (cast_frozen_blocks, decoder_checkpoint_units,
                                                 freeze_for_distillation, teacher_of)
from varformer.varestorer.distill_stage import loss_config, model_settings
from varformer.varestorer.distill_task import DistillTask
from varformer.varestorer.demo import RandomPromptEncoder
from varformer.varestorer.distill_text import PromptFeatures
from varformer.varestorer.model import VARestorer
from varformer.varestorer.perceptual import load_training_lpips

PROMPT_ROWS = 24          # T5 rows of a typical BLIP caption ("a close up of a ..."): cross-attention is small
ADAM_BYTES = 20           # float32 weight + gradient + exp_avg + exp_avg_sq + EMA shadow


def _unique_bytes(modules: List[nn.Module]) -> Tuple[int, int, int]:
    """(trainable params, frozen params, state bytes) over the unique tensors of ``modules``."""
    seen = {}
    for m in modules:
        for p in list(m.parameters()) + list(m.buffers()):
            seen[id(p)] = p
    trainable = sum(p.numel() for p in seen.values() if isinstance(p, nn.Parameter) and p.requires_grad)
    frozen = sum(p.numel() for p in seen.values() if isinstance(p, nn.Parameter) and not p.requires_grad)
    state = sum(p.numel() * (ADAM_BYTES if isinstance(p, nn.Parameter) and p.requires_grad else p.element_size())
                for p in seen.values())
    return trainable, frozen, state


class SavedBytesByUnit:
    """Bytes autograd saves during a forward, split into those saved inside each unit (module) and the rest, and
    the bytes of the units' tensor inputs (what checkpointing keeps)."""

    def __init__(self, units: List[nn.Module]):
        self.units, self.stack = units, []
        self.inside = [0] * len(units)
        self.outside = 0
        self.inputs: Dict[int, int] = {}
        self.seen: Dict[int, int] = {}
        self.keep: List[torch.Tensor] = []      # keeps the ids unique while counting

    def _pack(self, t: torch.Tensor):
        base = t._base if t._base is not None else t
        if isinstance(base, nn.Parameter) or id(base) in self.seen:   # weights are model state
            return t
        self.keep.append(base)
        n = self.seen[id(base)] = base.numel() * base.element_size()
        if self.stack:
            self.inside[self.stack[-1]] += n
        else:
            self.outside += n
        return t

    def run(self, forward) -> None:
        handles = []
        for i, m in enumerate(self.units):
            def pre(module, args, i=i):
                for a in args:
                    if torch.is_tensor(a) and a.requires_grad:
                        self.inputs[id(a)] = a.numel() * a.element_size()
                        self.keep.append(a)
                self.stack.append(i)

            def post(module, args, output):
                self.stack.pop()            # returns None: the output stays the module's

            handles += [m.register_forward_pre_hook(pre), m.register_forward_hook(post)]
        try:
            with torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t):
                forward()
        finally:
            for h in handles:
                h.remove()

    def checkpointed_total(self) -> int:
        return self.outside + sum(self.inputs.values()) + max(self.inside, default=0)

    def total(self) -> int:
        return self.outside + sum(self.inside)


class PlanTask(DistillTask):
    """The step without the random text drop (a data-dependent branch fake tensors cannot take)."""

    def _texts(self, captions, device):
        text = PaddedText.from_list(self.text(list(captions)), device=device)
        return text, text, torch.zeros(len(captions), dtype=torch.bool)


def estimate_distill_memory(cfg, micro: int, precision: str) -> Tuple[int, int, Dict[str, int]]:
    """``StageSpec.estimate_memory``: (state bytes, activation bytes per image, parameter counts)."""
    loss, s = loss_config(cfg), model_settings(cfg)
    size = s.image_size
    with torch.device("meta"):
        student = VARestorer(**s.constructor_kwargs(), drop_path_rate=loss.student_drop_path)
    freeze_for_distillation(student)
    student.transformer.rope(torch.device("cpu"))            # the RoPE table, real, before the fake mode
    lpips = (load_training_lpips(loss.lpips_net, random_trunk=True)
             if loss.needs_decode and loss.lpips_weight > 0 else None)
    with FakeTensorMode(allow_non_fake_inputs=True):
        student = student.to_empty(device="cpu").train()
        if loss.frozen_dtype == "bf16":
            cast_frozen_blocks(student, torch.bfloat16)
        teacher = teacher_of(student, shared=loss.teacher_shares_weights) if loss.needs_teacher else None
        if teacher is not None:
            teacher._rope = student.transformer._rope
        text = PromptFeatures(lambda prompts: [torch.randn(PROMPT_ROWS, s.text_channels) for _ in prompts],
                              s.text_channels, RandomPromptEncoder(s.text_channels).identity)
        task = PlanTask(student, teacher, loss, text, lpips)
        task.train()
        units = list(student.transformer.iter_blocks())
        if loss.needs_decode:
            units += decoder_checkpoint_units(student) + ([] if lpips is None else list(lpips.net.children()))
        counter = SavedBytesByUnit(units)
        batch = {"lq": torch.rand(1, 3, size, size), "gt": torch.rand(1, 3, size, size),
                 "caption": ["a photo"]}
        with autocast(torch.device("cpu"), "bf16") if precision == "bf16" else fp32_region("cpu"):
            counter.run(lambda: task(batch))
    per_image = counter.checkpointed_total() if cfg.train.grad_checkpointing else counter.total()
    parts = [student] + ([teacher] if teacher is not None else []) + ([lpips] if lpips is not None else [])
    trainable, frozen, state = _unique_bytes(parts)
    return state, per_image, {"trainable_params": trainable, "frozen_params": frozen, "state_bytes": state}
