"""VAR's multi-scale VQVAE (tokenizer): conv encoder, multi-scale residual quantizer, conv decoder.

    vae = VQVAE(vocab_size=4096, z_channels=32, ch=160, share_quant_resi=4, patch_nums=(1,2,3,4,5,6,8,10,13,16))
    vae.load_state_dict(torch.load('vae_ch160v4096z32.pth', weights_only=True), strict=True)
    f = vae.encode(img)                  # (B,3,256,256) in [-1,1] -> (B,32,16,16), after quant_conv
    idx = vae.img_to_indices(img)        # 10 LongTensors (B, pn^2)
    fhats = vae.indices_to_fhat(idx)     # 10 cumulative f_hat (B,32,16,16)
    img = vae.fhat_to_img(fhats[-1])     # (B,3,256,256) clamped to [-1,1]
    x = vae.indices_to_var_input(idx)    # (B,679,32) VAR teacher-forcing input
    f_hat, usages, vq_loss = vae.quantize(f)   # training forward of the quantizer (straight-through)

The sub-modules `encoder`, `decoder`, `quantize`, `quant_conv`, `post_quant_conv` carry the official key names
(324 state-dict entries for ch=160). The tokenizer methods above (everything but `forward` and the plain
sub-module calls) run in float32 with autocast disabled; `vae.encoder(x)` / `vae.decoder(z)` are ordinary
module calls that follow whatever autocast the caller sets.

Pieces for autoregressive callers live on the quantizer: `vae.quantize.embed_tokens(idx, si)`,
`vae.quantize.scale_residual(h, si)` (phi(up(h)), what is added to f_hat) and
`vae.quantize.next_scale_tokens(f_hat, si)` (the next VAR input); `vae.autoregressive_step(...)` combines them.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from varformer.backbone.quantizer import MultiScaleQuantizer
from varformer.backbone.vqvae_blocks import Decoder, Encoder
from varformer.runtime import fp32_region

DEFAULT_PATCH_NUMS = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)


class VQVAE(nn.Module):
    def __init__(self, vocab_size: int = 4096, z_channels: int = 32, ch: int = 160, share_quant_resi: int = 4,
                 patch_nums: tuple[int, ...] = DEFAULT_PATCH_NUMS, ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4),
                 num_res_blocks: int = 2, quant_resi: float = 0.5, beta: float = 0.25):
        super().__init__()
        if ch % 32 != 0:
            raise ValueError(f"ch must be a multiple of 32 (GroupNorm with 32 groups), got {ch}")
        self.vocab_size, self.Cvae, self.ch = vocab_size, z_channels, ch
        self.patch_nums = tuple(int(p) for p in patch_nums)
        self.downsample = 2 ** (len(ch_mult) - 1)
        self.encoder = Encoder(ch=ch, ch_mult=ch_mult, num_res_blocks=num_res_blocks, z_channels=z_channels)
        self.decoder = Decoder(ch=ch, ch_mult=ch_mult, num_res_blocks=num_res_blocks, z_channels=z_channels)
        self.quantize = MultiScaleQuantizer(vocab_size=vocab_size, Cvae=z_channels, patch_nums=self.patch_nums,
                                            share_quant_resi=share_quant_resi, quant_resi=quant_resi, beta=beta)
        self.quant_conv = nn.Conv2d(z_channels, z_channels, kernel_size=3, stride=1, padding=1)
        self.post_quant_conv = nn.Conv2d(z_channels, z_channels, kernel_size=3, stride=1, padding=1)

    # ------------------------------------------------------------------ training forward
    def forward(self, img_B3HW: torch.Tensor, return_usages: bool = False):
        """(unclamped reconstruction, usages or None, vq_loss); gradients flow (straight-through)."""
        f_hat, usages, vq_loss = self.quantize(self.quant_conv(self.encoder(img_B3HW)), return_usages)
        return self.decoder(self.post_quant_conv(f_hat)), usages, vq_loss

    # ------------------------------------------------------------------ tokenizer API (float32)
    def _check_img(self, img_B3HW: torch.Tensor) -> None:
        side = self.patch_nums[-1] * self.downsample
        if img_B3HW.ndim != 4 or img_B3HW.shape[1] != 3 or tuple(img_B3HW.shape[-2:]) != (side, side):
            raise ValueError(f"expected images (B, 3, {side}, {side}) in [-1, 1], got {tuple(img_B3HW.shape)}")

    def encode(self, img_B3HW: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] -> f (B, Cvae, H/16, W/16), the quantizer input (after quant_conv)."""
        self._check_img(img_B3HW)
        with fp32_region(img_B3HW.device.type):
            return self.quant_conv(self.encoder(img_B3HW.float()))

    def f_to_indices(self, f_BChw: torch.Tensor) -> list[torch.Tensor]:
        """Tokenise a latent (e.g. an adapted one): 10 index maps (B, pn^2)."""
        return self.quantize.f_to_indices_and_fhats(f_BChw)[0]

    def f_to_indices_and_fhats(self, f_BChw: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Index maps and the cumulative f_hat after each scale, from one pass of the code search."""
        return self.quantize.f_to_indices_and_fhats(f_BChw)

    @torch.no_grad()
    def img_to_indices(self, img_B3HW: torch.Tensor) -> list[torch.Tensor]:
        """(B, 3, 256, 256) in [-1, 1] -> 10 LongTensors (B, pn^2), row-major tokens."""
        return self.f_to_indices(self.encode(img_B3HW))

    def indices_to_fhat(self, idx_list: list[torch.Tensor]) -> list[torch.Tensor]:
        """Cumulative f_hat (B, Cvae, 16, 16) after each of the scales."""
        return self.quantize.indices_to_fhat(idx_list)

    def indices_to_var_input(self, idx_list: list[torch.Tensor]) -> torch.Tensor:
        """VAR teacher-forcing input (B, L - 1, Cvae) (the last index map is not needed and may be omitted)."""
        return self.quantize.indices_to_var_input(idx_list)

    def fhat_to_img(self, f_hat_BChw: torch.Tensor) -> torch.Tensor:
        """Decode: (B, Cvae, 16, 16) -> (B, 3, 256, 256) clamped to [-1, 1]."""
        with fp32_region(f_hat_BChw.device.type):
            return self.decoder(self.post_quant_conv(f_hat_BChw.float())).clamp_(-1, 1)

    def indices_to_img(self, idx_list: list[torch.Tensor]) -> torch.Tensor:
        """Decode index maps: `fhat_to_img(indices_to_fhat(idx)[-1])`, in [-1, 1]."""
        return self.fhat_to_img(self.indices_to_fhat(idx_list)[-1])

    def autoregressive_step(self, f_hat_BChw: torch.Tensor | None, h_BChw: torch.Tensor,
                            si: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """One step of next-scale decoding (not in place, so it can carry gradients).

        `h_BChw` (B, Cvae, pn, pn): scale si's token embeddings (codebook rows or a soft mixture of them).
        Returns (f_hat after scale si, this scale's residual phi(up(h)) (B, Cvae, 16, 16), next-scale tokens
        (B, pn_{si+1}^2, Cvae), or None after the last scale). `f_hat_BChw=None` means zeros."""
        with fp32_region(h_BChw.device.type):
            residual = self.quantize.scale_residual(h_BChw.float(), si)
            f_hat = residual if f_hat_BChw is None else f_hat_BChw + residual
            nxt = self.quantize.next_scale_tokens(f_hat, si) if si < len(self.patch_nums) - 1 else None
        return f_hat, residual, nxt

    # ------------------------------------------------------------------ loading
    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """Like nn.Module.load_state_dict, but (as the official loader) a `quantize.ema_vocab_hit_SV` monitoring
        buffer with another number of scales is replaced by this model's own (zero) buffer."""
        key = 'quantize.ema_vocab_hit_SV'
        own = self.quantize.ema_vocab_hit_SV
        if key in state_dict and state_dict[key].shape[0] != own.shape[0]:
            state_dict = dict(state_dict)
            device = state_dict[key].device
            state_dict[key] = (own.detach().clone().to(device) if not own.is_meta
                               else torch.zeros(own.shape, dtype=own.dtype, device=device))
        return super().load_state_dict(state_dict, strict=strict, assign=assign)
