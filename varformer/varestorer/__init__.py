"""VARestorer on Infinity's backbone pieces (model layer, beside ``varformer.model`` and ``varformer.restorevar``).

One concept per module: ``settings`` (constructor <-> checkpoint metadata), ``lora`` (the adapters, their injection
and merge), ``weights`` (where the released files come from), ``convert`` (official layouts <-> ours), ``model`` (the
assembled ``VARestorer``), ``text`` (T5 prompt features and BLIP captions through an on-disk cache), ``restorer``
(the model with its text on the shared restore path), ``config`` (its ``model:`` section), ``files`` (its model
files), ``demo`` (the untrained demo model), ``spec`` (its ``MethodSpec``). Import order inside the package follows
that list. The transformer, BSQ-VAE, quantiser,
RoPE and sampler are generic pieces in ``varformer.backbone.infinity``; SwinIR is ``varformer.backbone.swinir``.
"""
from varformer.varestorer.convert import (convert_varestorer, infer_varestorer_layout, official_varestorer_shapes,
                                          to_official_varestorer)
from varformer.varestorer.lora import LoraLinear, inject_lora, lora_parameters, merge_lora
from varformer.varestorer.model import SampleOutputs, VARestorer, VARestorerInputError
from varformer.varestorer.settings import VARestorerSettings
from varformer.varestorer.text import BlipCaptioner, T5PromptEncoder, TextCache
from varformer.varestorer.weights import INFINITY_FILE, SWINIR_FILE, VAE_FILE, VARESTORER_FILE, find_weight_file

__all__ = ["VARestorer", "VARestorerSettings", "VARestorerInputError", "SampleOutputs", "convert_varestorer",
           "infer_varestorer_layout", "official_varestorer_shapes", "to_official_varestorer", "LoraLinear",
           "inject_lora", "merge_lora", "lora_parameters", "find_weight_file", "VARESTORER_FILE", "VAE_FILE",
           "SWINIR_FILE", "INFINITY_FILE", "TextCache", "T5PromptEncoder", "BlipCaptioner"]
