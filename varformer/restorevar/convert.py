"""RestoreVAR's official weight layouts <-> ours, and the stage-1 initialisation from ``var_d16.pth``.

    cfg, sd = convert_restorevar(official_sd)      # restorevar.pth (594 tensors at d16) -> our var.* / refiner.*
    official_sd = to_official_restorevar(sd, settings)          # and back (buffers recomputed)
    var_sd, report = stage1_init_from_var(var_d16_sd, settings)  # our var.* of the official stage-1 start

Ours: ``var.<official key>`` for the transformer and ``refiner.<key>`` for the official ``vae_refiner.<key>``. The five
constant buffers of the official file (``lvl_1L``, ``attn_bias_for_masking``, ``lvl_1L_cond``, ``freqs_cis``,
``freqs_cis_cross``: 20 MB of mask at 512 px) are not stored by us: the converter recomputes them and refuses a file
whose copies differ, so the conversion is strict both ways. The VQVAE is a separate official file
(``vae_restorevar.ckpt``), loaded under ``vae.*`` unchanged.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import torch

from varformer.backbone.state_dict_check import first_keys, key_mismatch
from varformer.errors import CheckpointMismatchError
from varformer.restorevar.refiner import LatentRefiner
from varformer.restorevar.settings import HEAD_DIM, RestoreVARSettings
from varformer.restorevar.transformer import RestoreVARTransformer

REFINER_PREFIX = "vae_refiner."
CONSTANT_BUFFERS = ("lvl_1L", "attn_bias_for_masking", "lvl_1L_cond", "freqs_cis", "freqs_cis_cross")
# var_d16.pth tensors the stage-1 model has no place for (official utils/modify_ckpt.py pops the first four;
# train.py's strict=False load silently drops the AdaLN projections)
VAR_DROPPED = re.compile(r"^(pos_start|pos_1LC|attn_bias_for_masking|lvl_1L|blocks\.\d+\.ada_lin\.1\.(weight|bias)|"
                         r"head_nm\.ada_lin\.1\.(weight|bias))$")
VAR_LOADED = re.compile(r"^(word_embed\.|class_emb\.|lvl_embed\.|head\.|blocks\.\d+\.(attn|ffn)\.)")


def _patch_nums_from_levels(lvl_1L: torch.Tensor) -> List[int]:
    counts = torch.bincount(lvl_1L.flatten().long()).tolist()
    pns = [round(c ** 0.5) for c in counts]
    if any(p * p != c for p, c in zip(pns, counts)):
        raise CheckpointMismatchError(f"lvl_1L does not describe square scales (tokens per scale {counts})")
    return pns


def infer_official_layout(sd: Mapping[str, torch.Tensor], patch_nums: Optional[Sequence[int]] = None) -> Dict:
    """depth, embed_dim, patch_nums and the refiner's size of an official RestoreVAR state dict."""
    blocks = {int(m.group(1)) for k in sd for m in [re.match(r"blocks\.(\d+)\.", k)] if m}
    if not blocks or "word_embed.weight" not in sd or "cross_attn" not in " ".join(sd):
        kind = ("a plain VAR (AdaLN, absolute positions)" if "pos_1LC" in sd else
                "a VQVAE" if "encoder.conv_in.weight" in sd else "not a RestoreVAR transformer")
        raise CheckpointMismatchError(f"this state dict is {kind}: expected RestoreVAR's restorevar.pth layout "
                                      "(blocks.{i}.cross_attn.*, word_embed_cond.*, vae_refiner.*)")
    if patch_nums is None:
        if "lvl_1L" not in sd:
            raise CheckpointMismatchError("the state dict has no lvl_1L buffer to read the scales from; pass "
                                          "patch_nums")
        patch_nums = _patch_nums_from_levels(sd["lvl_1L"])
    embed_dim = int(sd["word_embed.weight"].shape[0])
    layers = {int(m.group(1)) for k in sd for m in [re.match(r"vae_refiner\.transformer\.layers\.(\d+)\.", k)] if m}
    cfg = {"depth": max(blocks) + 1, "embed_dim": embed_dim, "patch_nums": [int(p) for p in patch_nums],
           "refiner_depth": max(layers) + 1 if layers else 0}
    if layers:
        dim = int(sd[REFINER_PREFIX + "proj_in.weight"].shape[0])
        cfg.update(refiner_dim=dim, refiner_heads=dim // HEAD_DIM,
                   refiner_mlp_dim=int(sd[REFINER_PREFIX + "transformer.layers.0.1.net.1.weight"].shape[0]))
    return cfg


def _reference_shapes(settings: RestoreVARSettings) -> Tuple[Dict[str, torch.Size], Dict[str, torch.Size]]:
    """Our (var.*, refiner.*) tensor shapes for these settings, without allocating anything."""
    with torch.device("meta"):
        var = RestoreVARTransformer(32, 4096, settings.patch_nums, settings.depth, settings.embed_dim,
                                    settings.num_heads)
        var_shapes = {k: t.shape for k, t in var.state_dict().items()}
        ref_shapes = {}
        if settings.refiner_depth:
            ref = LatentRefiner(var.N, var.L, 32, settings.embed_dim, settings.refiner_dim, settings.refiner_depth,
                                settings.refiner_heads, settings.refiner_mlp_dim)
            ref_shapes = {k: t.shape for k, t in ref.state_dict().items()}
    return var_shapes, ref_shapes


def constant_buffers(settings: RestoreVARSettings) -> Dict[str, torch.Tensor]:
    """The official file's constant buffers for these settings (what our transformer recomputes)."""
    with torch.device("meta"):
        var = RestoreVARTransformer(32, 4096, settings.patch_nums, settings.depth, settings.embed_dim,
                                    settings.num_heads)
    return var.constant_buffers("cpu")


def _check_buffer(name: str, got: torch.Tensor, want: torch.Tensor) -> None:
    if tuple(got.shape) != tuple(want.shape) or got.dtype != want.dtype:
        raise CheckpointMismatchError(f"buffer {name}: {tuple(got.shape)} {got.dtype} in the file, "
                                      f"{tuple(want.shape)} {want.dtype} for these settings")
    got = got.detach().to("cpu")
    same = (torch.equal(got, want) if not got.is_floating_point() and not got.is_complex()
            else torch.allclose(got, want, rtol=0, atol=1e-5, equal_nan=True))
    if not same:
        raise CheckpointMismatchError(f"buffer {name} of the file differs from the one these settings give "
                                      "(another patch_nums, RoPE base or head size?)")


def convert_restorevar(official_sd: Mapping[str, torch.Tensor],
                       patch_nums: Optional[Sequence[int]] = None) -> Tuple[Dict, Dict[str, torch.Tensor]]:
    """Official RestoreVAR state dict (``restorevar.pth``, or a stage-1 ``var_wo_ddp`` without refiner) ->
    (cfg: depth, embed_dim, patch_nums, refiner_depth [, refiner_dim, refiner_heads, refiner_mlp_dim],
    our state dict). Every tensor is placed with its shape checked, every buffer checked against ours."""
    cfg = infer_official_layout(official_sd, patch_nums)
    settings = RestoreVARSettings(**cfg).validate()
    var_shapes, ref_shapes = _reference_shapes(settings)
    expected = dict(var_shapes)
    expected.update({REFINER_PREFIX + k: s for k, s in ref_shapes.items()})
    buffers = constant_buffers(settings)
    # the constant buffers are compared by value below, not by shape here
    mismatch = key_mismatch(dict(expected, **{b: () for b in CONSTANT_BUFFERS}), official_sd,
                            ignore_shape=CONSTANT_BUFFERS)
    if mismatch:
        raise CheckpointMismatchError(" ".join([f"not the official RestoreVAR layout for {cfg}:", *mismatch]))
    for name in CONSTANT_BUFFERS:
        _check_buffer(name, official_sd[name], buffers[name])
    ours = {}
    for k, v in official_sd.items():
        if k in CONSTANT_BUFFERS:
            continue
        ours["refiner." + k[len(REFINER_PREFIX):] if k.startswith(REFINER_PREFIX) else "var." + k] = v
    return cfg, ours


def to_official_restorevar(state_dict: Mapping[str, torch.Tensor], settings: RestoreVARSettings
                           ) -> Tuple[Dict[str, torch.Tensor], Dict[str, torch.Tensor]]:
    """Our state dict -> (official ``restorevar.pth`` state dict with its constant buffers, the ``vae.*`` VQVAE state
    dict as ``vae_restorevar.ckpt`` holds it)."""
    official: Dict[str, torch.Tensor] = {}
    vae: Dict[str, torch.Tensor] = {}
    for k, v in state_dict.items():
        if k.startswith("var."):
            official[k[len("var."):]] = v
        elif k.startswith("refiner."):
            official[REFINER_PREFIX + k[len("refiner."):]] = v
        elif k.startswith("vae."):
            vae[k[len("vae."):]] = v
        elif not k.startswith("tokenizer_vae."):
            raise CheckpointMismatchError(f"unexpected key {k} in a RestoreVAR state dict")
    official.update(constant_buffers(settings))
    return official, vae


@dataclass
class InitReport:
    loaded: List[str] = field(default_factory=list)     # var_d16 tensors copied
    dropped: List[str] = field(default_factory=list)    # var_d16 tensors without a place (AdaLN, absolute positions)
    new: List[str] = field(default_factory=list)        # ours that keep their random initialisation

    def summary(self) -> str:
        return (f"stage-1 init from VAR: {len(self.loaded)} tensors loaded, {len(self.dropped)} dropped "
                f"(AdaLN projections, absolute positions, buffers), {len(self.new)} new (random init)")


def stage1_init_from_var(var_sd: Mapping[str, torch.Tensor], settings: RestoreVARSettings,
                         generator_seed: Optional[int] = None) -> Tuple[Dict[str, torch.Tensor], InitReport]:
    """Our ``var.*`` tensors of the official stage-1 starting point (official train.py + utils/modify_ckpt.py): the
    official random initialisation, then every ``var_d16.pth`` tensor that has a place loaded over it (embeddings,
    blocks' attention and MLP, head); the AdaLN projections and absolute positions are dropped, the new modules
    (cross-attentions, conditioning projections, gains at 0) keep their initialisation. Any other key, or a shape
    that differs (another depth or number of scales), is an error."""
    if generator_seed is not None:
        torch.manual_seed(generator_seed)
    var = RestoreVARTransformer(32, 4096, settings.patch_nums, settings.depth, settings.embed_dim, settings.num_heads)
    var.init_weights()
    own = var.state_dict()
    report = InitReport()
    unknown = [k for k in var_sd if not (VAR_DROPPED.match(k) or VAR_LOADED.match(k))]
    if unknown:
        raise CheckpointMismatchError(f"not a VAR state dict of the official layout: unexpected keys "
                                      f"({first_keys(unknown)})")
    for k, v in var_sd.items():
        if VAR_DROPPED.match(k):
            report.dropped.append(k)
            continue
        if k not in own or tuple(own[k].shape) != tuple(v.shape):
            want = tuple(own[k].shape) if k in own else "no such tensor"
            raise CheckpointMismatchError(f"VAR tensor {k} {tuple(v.shape)} does not fit RestoreVAR(depth="
                                          f"{settings.depth}, embed_dim={settings.embed_dim}, "
                                          f"{len(settings.patch_nums)} scales): {want}")
        own[k] = v.detach().clone().float()
        report.loaded.append(k)
    absent = [k for k in own if VAR_LOADED.match(k) and k not in report.loaded]
    if absent:
        raise CheckpointMismatchError(f"the VAR state dict lacks {len(absent)} tensors a depth-{settings.depth} "
                                      f"RestoreVAR takes from it ({first_keys(absent)}): a shallower VAR?")
    report.new = sorted(set(own) - set(report.loaded))
    return {f"var.{k}": v for k, v in own.items()}, report
