"""Prompt features during VARestorer's distillation: the captions of a batch -> one (L_i, C) float32 tensor each.

- ``t5`` (the method): Flan-T5-XL rows through the on-disk text cache (``varformer.varestorer.text``); T5 is loaded
  only on a cache miss (fill the cache beforehand: ``varformer convert varestorer-captions ... --encode``);
- ``random``: seeded random rows per prompt (``varestorer.demo.RandomPromptEncoder``: the untrained demo's), for
  random-init tests and the offline demo ONLY -- not text features of any model.

Features met once stay in memory (a bounded dict), so a step does not read the disk for a prompt it has seen.

    features = PromptFeatures.from_config("t5", cfg.model, text_channels=2048)
    rows = features(["a dog on grass", ""])        # [(L_0, 2048), (L_1, 2048)]
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Callable, List, Sequence

import torch

from varformer.errors import ConfigError
from varformer.varestorer.demo import RandomPromptEncoder
from varformer.varestorer.text import T5PromptEncoder, TextCache

MEMORY_ENTRIES = 8192


class PromptFeatures:
    def __init__(self, lookup: Callable[[List[str]], List[torch.Tensor]], channels: int, identity: str):
        self.lookup, self.channels, self.identity = lookup, channels, identity
        self.memory: "OrderedDict[str, torch.Tensor]" = OrderedDict()

    @classmethod
    def from_config(cls, encoder: str, model_cfg, text_channels: int) -> "PromptFeatures":
        """``encoder`` (train.loss.text_encoder) ``t5``: the text model, cache, device and dtype of the ``model:``
        section; ``random``: the demo's seeded random features (the same the untrained demo restores with)."""
        if encoder == "random":
            enc = RandomPromptEncoder(text_channels)
            return cls(enc.encode, text_channels, enc.identity)
        if encoder != "t5":
            raise ConfigError(f"train.loss.text_encoder must be t5 or random, got {encoder!r}")
        cache = TextCache(model_cfg.text_cache)
        t5 = T5PromptEncoder(model_cfg.text_model, local_files_only=model_cfg.local_files_only,
                             device=model_cfg.text_device, dtype=model_cfg.text_dtype)
        return cls(lambda prompts: cache.prompt_features(prompts, t5), text_channels, t5.identity)

    def __call__(self, prompts: Sequence[str]) -> List[torch.Tensor]:
        if isinstance(prompts, str):
            raise ConfigError("prompt features take a list of prompts")
        found = {p: self.memory[p] for p in dict.fromkeys(prompts) if p in self.memory}
        missing = [p for p in dict.fromkeys(prompts) if p not in found]
        if missing:
            for p, f in zip(missing, self.lookup(missing)):
                if f.ndim != 2 or f.shape[1] != self.channels:
                    raise ConfigError(f"{self.identity} gives ({f.shape[-1]}-wide) features for a transformer of "
                                      f"{self.channels} text channels")
                found[p] = self.memory[p] = f.float()
                if len(self.memory) > MEMORY_ENTRIES:
                    self.memory.popitem(last=False)
        return [found[p] for p in prompts]
