"""SwinIR as DiffBIR's stage-1 restorer (``general_swinir_v1.ckpt``; the copy VARestorer ships is official
infinity/models/swinir.py, configured in tools/run_varestorer.py ``load_swinir_model``), built from the shared Swin
pieces of ``varformer.backbone.swin``.

Released configuration: ``embed_dim=180``, 8 residual Swin groups of 6 blocks with 6 heads, window 8, MLP ratio 2,
pixel-unshuffle 8 in, ``nearest+conv`` x8 out, ``img_range=1``, ``resi_connection='1conv'``. A 512x512 image in
[0, 1]::

    x = x - mean(0.4488, 0.4371, 0.4040)
    f = conv_first(unshuffle_8(x))                     # (B, 180, 64, 64)
    f = conv_after_body(norm(RSTB_8(...RSTB_1(patch_norm(f))))) + f
    f = lrelu_0.01(conv_before_upsample(f))            # 64 channels
    3x: f = lrelu_0.2(conv_up_i(nearest_x2(f)))        # 512x512
    out = conv_last(lrelu_0.2(conv_hr(f))) + mean      # not clamped

The official input padding to a multiple of the window and the final crop are no-ops for sides that are multiples of
64, the only inputs taken here. Our keys differ from the official file in one place (``layers.{i}.residual_group.
blocks`` is ``layers.{i}.blocks``, ``patch_embed.norm`` is ``patch_norm``); ``swinir_from_official`` maps them and
checks the file's ``relative_position_index`` / ``attn_mask`` buffers against the ones recomputed here.
"""
from __future__ import annotations

import re
from typing import Dict, Mapping, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from varformer.backbone.swin import RSTB, relative_position_index, shifted_window_mask
from varformer.errors import CheckpointMismatchError

RGB_MEAN = (0.4488, 0.4371, 0.4040)


class SwinIR(nn.Module):
    def __init__(self, embed_dim: int = 180, depths: Sequence[int] = (6,) * 8, num_heads: Sequence[int] = (6,) * 8,
                 window: int = 8, mlp_ratio: float = 2.0, unshuffle_scale: int = 8, num_feat: int = 64,
                 in_chans: int = 3):
        super().__init__()
        if len(depths) != len(num_heads) or unshuffle_scale not in (2, 4, 8):
            raise ValueError(f"SwinIR: depths {tuple(depths)} / heads {tuple(num_heads)} / unshuffle "
                             f"{unshuffle_scale} do not fit")
        self.window, self.scale, self.embed_dim = window, unshuffle_scale, embed_dim
        self.multiple = window * unshuffle_scale
        self.conv_first = nn.Sequential(nn.PixelUnshuffle(unshuffle_scale),
                                        nn.Conv2d(in_chans * unshuffle_scale ** 2, embed_dim, 3, 1, 1))
        self.patch_norm = nn.LayerNorm(embed_dim)
        self.layers = nn.ModuleList(RSTB(embed_dim, h, window, d, mlp_ratio) for d, h in zip(depths, num_heads))
        self.norm = nn.LayerNorm(embed_dim)
        self.conv_after_body = nn.Conv2d(embed_dim, embed_dim, 3, 1, 1)
        self.conv_before_upsample = nn.Sequential(nn.Conv2d(embed_dim, num_feat, 3, 1, 1), nn.LeakyReLU())
        self.conv_ups = [f"conv_up{i + 1}" for i in range({2: 1, 4: 2, 8: 3}[unshuffle_scale])]
        for name in self.conv_ups:
            setattr(self, name, nn.Conv2d(num_feat, num_feat, 3, 1, 1))
        self.conv_hr = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_last = nn.Conv2d(num_feat, in_chans, 3, 1, 1)

    @staticmethod
    def _tokens_norm(norm: nn.LayerNorm, x_BCHW: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x_BCHW.shape
        t = norm(x_BCHW.flatten(2).transpose(1, 2))
        return t.transpose(1, 2).reshape(B, C, H, W)

    def forward(self, x01: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1], H and W multiples of ``window * unshuffle`` -> (B, 3, H, W), unclamped."""
        H, W = x01.shape[-2:]
        if H % self.multiple or W % self.multiple:
            raise ValueError(f"SwinIR takes sides that are multiples of {self.multiple}, got {H}x{W}")
        mean = torch.tensor(RGB_MEAN, dtype=x01.dtype, device=x01.device).view(1, 3, 1, 1)
        f = self.conv_first(x01 - mean)
        h = self._tokens_norm(self.patch_norm, f)
        for layer in self.layers:
            h = layer(h)
        f = self.conv_after_body(self._tokens_norm(self.norm, h)) + f
        f = self.conv_before_upsample(f)
        for name in self.conv_ups:
            f = F.leaky_relu(getattr(self, name)(F.interpolate(f, scale_factor=2, mode="nearest")), 0.2)
        out = self.conv_last(F.leaky_relu(self.conv_hr(f), 0.2))
        return (out + mean).contiguous()


# ---------------------------------------------------------------------------------------------------------------
# the official file
# ---------------------------------------------------------------------------------------------------------------
_BUFFER = re.compile(r"^layers\.(\d+)\.residual_group\.blocks\.(\d+)\.(attn\.relative_position_index|attn_mask)$")


def unwrap_swinir_file(obj) -> Dict[str, torch.Tensor]:
    """The state dict of a DiffBIR SwinIR file: its ``state_dict`` entry when there is one, ``module.`` prefixes
    (DataParallel) removed."""
    sd = obj.get("state_dict", obj) if isinstance(obj, dict) else obj
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointMismatchError("not a SwinIR state dict (expected tensors, maybe under 'state_dict')")
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in sd.items()}


def swinir_layout(sd: Mapping[str, torch.Tensor]) -> Dict[str, object]:
    """SwinIR constructor arguments read from an official state dict's tensor shapes."""
    if "conv_first.1.weight" not in sd or "conv_last.weight" not in sd:
        raise CheckpointMismatchError("not a DiffBIR SwinIR state dict (no conv_first.1 / conv_last; is it the "
                                      "nearest+conv unshuffle model, general_swinir_v1.ckpt?)")
    blocks: Dict[int, int] = {}
    for k in sd:
        m = re.match(r"layers\.(\d+)\.residual_group\.blocks\.(\d+)\.", k)
        if m:
            blocks[int(m.group(1))] = max(blocks.get(int(m.group(1)), 0), int(m.group(2)) + 1)
    embed_dim, in_ch = sd["conv_first.1.weight"].shape[:2]
    table = sd["layers.0.residual_group.blocks.0.attn.relative_position_bias_table"]
    heads = [int(sd[f"layers.{i}.residual_group.blocks.0.attn.relative_position_bias_table"].shape[1])
             for i in range(len(blocks))]
    hidden = sd["layers.0.residual_group.blocks.0.mlp.fc1.weight"].shape[0]
    return {"embed_dim": int(embed_dim), "depths": [blocks[i] for i in range(len(blocks))], "num_heads": heads,
            "window": (round(table.shape[0] ** 0.5) + 1) // 2, "mlp_ratio": hidden / embed_dim,
            "unshuffle_scale": round((in_ch // 3) ** 0.5), "num_feat": int(sd["conv_hr.weight"].shape[0])}


def _expected_buffer(name: str, window: int, img_side: int) -> torch.Tensor:
    if name.endswith("relative_position_index"):
        return relative_position_index(window)
    return shifted_window_mask(img_side, img_side, window, window // 2)


def swinir_from_official(sd: Mapping[str, torch.Tensor], window: int) -> Dict[str, torch.Tensor]:
    """Official keys -> ours. The file's constant buffers are compared with ours (they must be equal; the shifted
    window mask of the official ``img_size=64`` build) and dropped: ours are recomputed for the input size."""
    out = {}
    for k, v in sd.items():
        m = _BUFFER.match(k)
        if m:
            want = _expected_buffer(m.group(3), window, int(v.shape[0] ** 0.5) * window if v.ndim == 3 else 0)
            if tuple(v.shape) != tuple(want.shape) or not torch.equal(v.to(want.dtype).cpu(), want):
                raise CheckpointMismatchError(f"SwinIR buffer {k} differs from the recomputed one (another window?)")
            continue
        k = re.sub(r"^layers\.(\d+)\.residual_group\.blocks\.", r"layers.\1.blocks.", k)
        out["patch_norm." + k[len("patch_embed.norm."):] if k.startswith("patch_embed.norm.") else k] = v
    return out


def swinir_to_official(sd: Mapping[str, torch.Tensor], layout: Mapping[str, object], img_size: int = 64
                       ) -> Dict[str, torch.Tensor]:
    """Ours -> the official key layout with its buffers (``img_size`` 64 as DiffBIR builds it)."""
    window = int(layout["window"])
    out = {}
    for k, v in sd.items():
        k = re.sub(r"^layers\.(\d+)\.blocks\.", r"layers.\1.residual_group.blocks.", k)
        out["patch_embed.norm." + k[len("patch_norm."):] if k.startswith("patch_norm.") else k] = v
    for i, depth in enumerate(layout["depths"]):
        for j in range(int(depth)):
            p = f"layers.{i}.residual_group.blocks.{j}."
            out[p + "attn.relative_position_index"] = relative_position_index(window)
            if j % 2:
                out[p + "attn_mask"] = shifted_window_mask(img_size, img_size, window, window // 2)
    return out


def official_shapes(layout: Mapping[str, object]) -> Tuple[Dict[str, Tuple[int, ...]], int]:
    """(official key -> shape of a SwinIR of this layout, parameter count), built on the meta device."""
    with torch.device("meta"):
        model = SwinIR(**layout)
    ours = model.state_dict()
    official = swinir_to_official({k: v for k, v in ours.items()}, layout)
    return {k: tuple(v.shape) for k, v in official.items()}, sum(p.numel() for p in model.parameters())
