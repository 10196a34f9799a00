"""Converter between the official VarFormer state dict (``VarFormer2`` / ``VarFormer2_varRec``) and ours.

    config, state_dict = map_official(official_sd, expected)  # layout inferred from the tensors, strict
    official_sd = to_official(state_dict)                     # the reverse (without the inert tensors)

Every official tensor is either mapped 1:1 (with a shape check against the model built from the inferred config)
or dropped as inert -- the Lvl-0 prior/DAE/AFT modules (never called), ``main_decoder.conv1__w`` (a softmax over one
channel), the zero-input ``patch_embed.proj`` convs, the recomputable Swin ``attn_mask`` / ``relative_position_index``
buffers and the all-zero ``cross_attn_blocks.*.zero_k_bias`` buffers. Anything else that cannot be placed, and any
of our tensors left unfilled, is an error listing the names. The mapping is one table of (official, ours) key
templates used in both directions.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import torch

from varformer.files import read_torch_file
from varformer.errors import CheckpointMismatchError, WeightsNotFoundError

N, R = "{n}", "{r}"

_VQVAE = ("encoder", "decoder", "quantize", "quant_conv", "post_quant_conv")
_VAR = ("pos_start", "pos_1LC", "lvl_1L", "attn_bias_for_masking", "word_embed", "class_emb", "lvl_embed",
        "blocks", "head_nm", "head")
_ADAPTER = (("norm1", "norm1"), ("norm2", "norm2"), ("conv1", "expand"), ("conv2", "dwconv"),
            ("conv3", "project"), ("sca1.conv0", "lka_dw5"), ("sca1.conv_spatial", "lka_dw7_dil3"),
            ("sca1.conv1", "lka_pw"), ("sca2.1", "channel_attn"), ("conv4", "ffn_expand"),
            ("conv5", "ffn_project"))
_TWAM_PARAMS = (("scale", "temperature"), ("beta", "beta"), ("gamma", "gamma"))
_TWAM_MODULES = (("norm_d", "norm_d"), ("norm_g", "norm_g"), ("d_proj1", "q_d"), ("g_proj1", "q_g"),
                 ("d_proj2", "v_d"), ("g_proj2", "v_g"))


def _rules() -> List[Tuple[str, str]]:
    rules: List[Tuple[str, str]] = []
    for m in _VQVAE:
        rules.append((f"{m}.{R}", f"vae.{m}.{R}"))
    for m in _VAR:
        rules += [(m, f"var.{m}"), (f"{m}.{R}", f"var.{m}.{R}")]
    for m in ("mat_q.weight", "mat_kv.weight", "q_bias", "v_bias"):
        rules.append((f"cross_attn_blocks.{N}.{m}", f"cross_attn.{N}.{m}"))
    rules.append((f"cross_attn_blocks.{N}.proj.{R}", f"cross_attn.{N}.proj.{R}"))
    for off, ours in _ADAPTER:
        rules.append((f"ft_layers.blks.{N}.{off}.{R}", f"adapter.blocks.{N}.{ours}.{R}"))
    rules += [(f"ft_layers.blks.{N}.beta", f"adapter.blocks.{N}.beta"),
              (f"ft_layers.blks.{N}.gamma", f"adapter.blocks.{N}.gamma"),
              (f"ft_layers.blks.{N}.IMAC.predictA{{k}}.{R}", f"adapter.blocks.{N}.curve.curve_params.{{k}}.{R}"),
              (f"ft_layers.blks.{N}.IMAC.conv{{k}}.{R}", f"adapter.blocks.{N}.curve.convs.{{k}}.{R}")]
    for off, ours in (("Mainencoder", "unet_encoder"), ("main_decoder", "unet_decoder")):
        g = f"{ours}.guidance.level{N}"
        rules += [
            (f"{off}.cat_rec_syn_bf_nm.Level_{N}.{R}", f"{g}.bridge.norm.{R}"),
            (f"{off}.cat_rec_syn_bf.Level_{N}.{R}", f"{g}.bridge.proj.{R}"),
            (f"{off}.cat_rec_syn.Level_{N}.swin_blocks.{{k}}.conv.{R}", f"{g}.select.rstbs.{{k}}.conv.{R}"),
            (f"{off}.cat_rec_syn.Level_{N}.swin_blocks.{{k}}.residual_group.{R}", f"{g}.select.rstbs.{{k}}.{R}"),
            (f"{off}.cat_rec_syn.Level_{N}.conv1x1.{R}", f"{g}.select.to_weights.{R}"),
            (f"{off}.cat_rec_syn.Level_{N}.conv_out.{R}", f"{g}.select.proj.{R}"),
            (f"{off}.cat_rec_syn.Level_{N}.upsample.conv.{R}", f"{g}.select.upsample_conv.{R}"),
            (f"{off}.DAE.Level_{N}.swin_blocks.{{k}}.conv.{R}", f"{g}.fuse.rstbs.{{k}}.conv.{R}"),
            (f"{off}.DAE.Level_{N}.swin_blocks.{{k}}.residual_group.{R}", f"{g}.fuse.rstbs.{{k}}.{R}"),
            (f"{off}.DAE.Level_{N}.conv1x1.{R}", f"{g}.fuse.to_logits.{R}"),
            (f"{off}.AFT.Level_{N}.{R}", f"{g}.aft.{R}"),
        ]
    rules += [("Mainencoder.down.{n}.downsample.{r}", "unet_encoder.down.{n}.resample.{r}"),
              ("main_decoder.up.{n}.upsample.{r}", "unet_decoder.up.{n}.resample.{r}"),
              ("main_decoder.input_w", "input_weight"),
              ("main_decoder.theta", "unet_decoder.theta")]
    for off, ours in _TWAM_PARAMS + tuple((o + ".{r}", u + ".{r}") for o, u in _TWAM_MODULES):
        rules += [(f"main_decoder.off_attn.af_quant.{off}", f"unet_decoder.align.quant.attn.{ours}"),
                  (f"main_decoder.off_attn.Level_{N}.{off}", f"unet_decoder.align.level{N}.attn.{ours}")]
    rules += [("main_decoder.align_func_dict.af_quant.{r}", "unet_decoder.align.quant.warp.{r}"),
              ("main_decoder.align_func_dict.Level_{n}.{r}", "unet_decoder.align.level{n}.warp.{r}"),
              ("main_decoder.cat_convs.Level_{n}.{r}", "unet_decoder.align.level{n}.merge.{r}")]
    for part in ("conv_in", "down", "mid", "norm_out", "conv_out"):
        rules.append((f"Mainencoder.{part}.{R}", f"unet_encoder.{part}.{R}"))
    for part in ("conv_in", "up", "mid", "norm_out", "conv_out"):
        rules.append((f"main_decoder.{part}.{R}", f"unet_decoder.{part}.{R}"))
    return rules


# inert official tensors: never influence the output (docs/official-differences.md, "Dead modules")
_INERT = [re.compile(p) for p in (
    r"(Mainencoder|main_decoder)\.(cat_rec_syn|cat_rec_syn_bf|cat_rec_syn_bf_nm|DAE|AFT)\.Level_0\..+",
    r"main_decoder\.conv1__w\..+",
    r".+\.patch_embed\.proj\.(weight|bias)",
    r".+\.attn_mask",
    r".+\.relative_position_index",
    r"cross_attn_blocks\.\d+\.zero_k_bias",
)]


def _template_regex(template: str) -> re.Pattern:
    out, pos = "", 0
    for m in re.finditer(r"\{(n|k|r)\}", template):
        out += re.escape(template[pos:m.start()])
        out += {"n": r"(?P<n>\d+)", "k": r"(?P<k>\d+)", "r": r"(?P<r>.+)"}[m.group(1)]
        pos = m.end()
    return re.compile(out + re.escape(template[pos:]) + r"\Z")


_RULES = [(_template_regex(o), o, _template_regex(u), u) for o, u in _rules()]


def _apply(key: str, direction: str) -> Optional[str]:
    for o_re, o_t, u_re, u_t in _RULES:
        src_re, dst_t = (o_re, u_t) if direction == "to_ours" else (u_re, o_t)
        m = src_re.match(key)
        if m:
            return dst_t.format(**m.groupdict())
    return None


def official_key_to_ours(key: str) -> Optional[str]:
    return _apply(key, "to_ours")


def our_key_to_official(key: str) -> Optional[str]:
    return _apply(key, "to_official")


def is_inert(key: str) -> bool:
    return any(p.fullmatch(key) for p in _INERT)


@dataclass
class ConversionReport:
    config: dict
    mapped: int = 0
    dropped: List[str] = field(default_factory=list)
    dropped_params: int = 0

    def summary(self) -> str:
        groups: Dict[str, int] = {}
        for k in self.dropped:
            kind = next(p.pattern for p in _INERT if p.fullmatch(k))
            groups[kind] = groups.get(kind, 0) + 1
        lines = [f"layout: {self.config}", f"mapped {self.mapped} tensors",
                 f"dropped {len(self.dropped)} inert tensors ({self.dropped_params:,} values):"]
        lines += [f"  {n:5d} x {pattern}" for pattern, n in groups.items()]
        return "\n".join(lines)


def infer_official_layout(sd: Dict[str, torch.Tensor]) -> dict:
    """(stage, depth, vae_ch, n_cross, dec_adjust) of an official VarFormer state dict, from its tensors."""
    def ids(pattern: str) -> set:
        return {int(m.group(1)) for k in sd for m in [re.match(pattern, k)] if m}

    if "encoder.conv_in.weight" not in sd or "pos_start" not in sd:
        raise CheckpointMismatchError(
            "not an official VarFormer state dict: no VQVAE (`encoder.conv_in.weight`) or VAR (`pos_start`) "
            f"tensors among its {len(sd)} keys (first: {', '.join(sorted(sd)[:3])})")
    has_enc, has_dec = any(k.startswith("Mainencoder.") for k in sd), any(k.startswith("main_decoder.") for k in sd)
    if has_enc != has_dec:
        raise CheckpointMismatchError("official state dict has only one of Mainencoder / main_decoder")
    depth = len(ids(r"blocks\.(\d+)\."))
    width = int(sd["pos_start"].shape[-1])
    if depth == 0 or width != 64 * depth:
        raise CheckpointMismatchError(f"VAR part inconsistent: {depth} blocks but width {width} (expected 64*depth)")
    config = {"stage": 2 if has_enc else 1, "depth": depth, "vae_ch": int(sd["encoder.conv_in.weight"].shape[0]),
              "n_cross": len(ids(r"cross_attn_blocks\.(\d+)\."))}
    if has_enc:
        config["dec_adjust"] = any(k.startswith("main_decoder.off_attn.") for k in sd)
    return config


def map_official(sd: Dict[str, torch.Tensor], expected: Optional[Dict[str, Tuple[int, ...]]] = None,
                 with_report: bool = False):
    """Official state dict -> (architecture dict, our state dict) [, ConversionReport]. Every official tensor is
    placed or dropped as inert (else an error listing the names); with ``expected`` (our key -> shape, from a model
    of the inferred layout) every one of our tensors must be filled with the right shape, reported in official
    names. ``checkpoint_io.convert_official`` supplies ``expected``."""
    sd = {k[len("module."):] if k.startswith("module.") else k: v for k, v in sd.items()}
    config = infer_official_layout(sd)
    report = ConversionReport(config=config)
    ours: Dict[str, torch.Tensor] = {}
    unplaced = []
    for k, v in sd.items():
        if is_inert(k):
            if k.endswith("zero_k_bias") and v.device.type != "meta" and bool(v.ne(0).any()):
                raise CheckpointMismatchError(f"{k} should be an all-zero buffer but is not")
            report.dropped.append(k)
            report.dropped_params += v.numel()
            continue
        new = official_key_to_ours(k)
        if new is None:
            unplaced.append(k)
        else:
            ours[new] = v
    unfilled, wrong = [], []
    if expected is not None:
        expected = {k: tuple(v) for k, v in expected.items()}
        unplaced += [o for o, n in ((our_key_to_official(n) or n, n) for n in ours) if n not in expected]
        unfilled = sorted(expected.keys() - ours.keys())
        wrong = sorted(f"{our_key_to_official(k)} {tuple(ours[k].shape)} (expected {expected[k]})"
                       for k in expected.keys() & ours.keys() if tuple(ours[k].shape) != expected[k])
    if unplaced or unfilled or wrong:
        parts = [f"cannot convert the official checkpoint (inferred layout {config}):"]
        if unplaced:
            parts.append(f"{len(unplaced)} official tensors could not be placed: {', '.join(sorted(unplaced)[:8])}"
                         + (" ..." if len(unplaced) > 8 else ""))
        if unfilled:
            parts.append(f"{len(unfilled)} of our tensors left unfilled: "
                         f"{', '.join(our_key_to_official(k) or k for k in unfilled[:8])}"
                         + (" ..." if len(unfilled) > 8 else ""))
        if wrong:
            parts.append(f"{len(wrong)} shape mismatches: {'; '.join(wrong[:4])}")
        raise CheckpointMismatchError("\n  ".join(parts))
    report.mapped = len(ours)
    return (config, ours, report) if with_report else (config, ours)


def to_official(state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Our state dict -> the official key layout (inert tensors are not recreated; the official code loads
    non-strictly)."""
    out = {}
    for k, v in state_dict.items():
        new = our_key_to_official(k)
        if new is None:
            raise CheckpointMismatchError(f"no official name for our tensor {k}")
        out[new] = v
    return out


def read_official(obj, key: Optional[str] = None, map_location="cpu", source: str = "checkpoint"
                  ) -> Dict[str, torch.Tensor]:
    """A BasicSR checkpoint ({'params', 'params_ema'}; ``params_ema`` unless ``key``), a raw state dict, or a path
    to either -> the state dict."""
    if isinstance(obj, (str, os.PathLike)):
        if not os.path.isfile(obj):
            raise WeightsNotFoundError(
                f"official checkpoint {obj} does not exist; the released weights are `net_g_last.pth` from "
                f"https://huggingface.co/wsy541/VarFormer")
        source = str(obj)
        obj = read_torch_file(obj, map_location)
    if not isinstance(obj, dict):
        raise CheckpointMismatchError(f"{source}: expected a dict, got {type(obj).__name__}")
    if any(k in obj for k in ("params", "params_ema")) or key is not None:
        want = key or "params_ema"
        if want not in obj:
            raise CheckpointMismatchError(
                f"{source} has no '{want}' entry (it has: {', '.join(map(str, obj))}); pass key=... / --key")
        obj = obj[want]
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointMismatchError(f"{source}: not a state dict of tensors (e.g. {bad[0]!r})")
    return obj
