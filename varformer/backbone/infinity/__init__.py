"""Infinity's pieces (FoundationVision/Infinity, as VARestorer uses them): the BSQ-VAE and its multi-scale bitwise
quantiser, the 2-D RoPE over the 1M schedule, the text-conditioned bitwise transformer with its block-causal
teacher-forcing pass and VARestorer's bidirectional long-input pass, the bit sampler, and strict loaders of the
official files. One concept per module; import order follows: rope2d, attention, text_pool, blocks, transformer,
bsq_vae, bsq_quantizer, bit_sampling, load."""
from varformer.backbone.infinity.bit_sampling import sample_bits
from varformer.backbone.infinity.bsq_quantizer import codes_from_bits, residual_pyramid, summed_codes
from varformer.backbone.infinity.bsq_vae import BSQVAE
from varformer.backbone.infinity.load import load_bsq_vae, load_infinity
from varformer.backbone.infinity.rope2d import SCHEDULE_025M, SCHEDULE_1M
from varformer.backbone.infinity.text_pool import PaddedText
from varformer.backbone.infinity.transformer import Infinity

__all__ = ["BSQVAE", "Infinity", "PaddedText", "SCHEDULE_025M", "SCHEDULE_1M", "codes_from_bits", "load_bsq_vae",
           "load_infinity", "residual_pyramid", "sample_bits", "summed_codes"]
