"""The networks of VARestorer's distillation (docs/varestorer.md, "Training (reconstructed)"), built as the
release's ``build_vae_bdgpt`` pairs them:

- the student: a ``VARestorer`` (LoRA-injected Infinity + BSQ-VAE + optional SwinIR) whose transformer starts from
  the pre-trained Infinity (``infinity_2b_reg.pth``) with fresh LoRA (``lora_down ~ N(0, 1/r^2)``, ``lora_up = 0``);
  only the LoRA tensors train;
- the teacher: the plain pre-trained Infinity (no LoRA, its text cross-attention keeps the value bias), frozen, in
  eval mode. Its tensors are the student's frozen base tensors themselves (``tie_teacher``: the same
  ``nn.Parameter`` objects, so one copy in memory, and moving the task to a device moves both), or a copy.

    student = student_from_files(settings, "infinity_2b_reg.pth", "infinity_vae_d32reg.pth", swinir_file)
    freeze_for_distillation(student)                     # LoRA only
    cast_frozen_blocks(student, torch.bfloat16)           # the release's bf16 blocks (linear weights stored bf16)
    teacher = teacher_of(student, shared=True)
"""
from __future__ import annotations

from typing import Dict, Iterable, List, Optional

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from varformer.backbone.infinity.load import (LORA_KEY, bsq_vae_from_official, bsq_vae_layout, infinity_layout,
                                              strip_infinity_buffers, unwrap_vae_file)
from varformer.backbone.infinity.transformer import Infinity
from varformer.backbone.swinir import swinir_from_official, swinir_layout, unwrap_swinir_file
from varformer.errors import CheckpointMismatchError
from varformer.files import read_torch_file
from varformer.varestorer.lora import LORA_TARGETS, LoraLinear
from varformer.varestorer.model import VARestorer, load_parts
from varformer.varestorer.settings import VARestorerSettings


def _lora_key(key: str) -> Optional[str]:
    """A plain Infinity key of a wrapped linear -> its key under the LoRA wrapper (``...sa.mat_qkv.linear.weight``);
    None for other keys (the attentive text pool outside the blocks has plain linears of the same names)."""
    if not key.startswith(("block_chunks.", "blocks.")):
        return None
    for target in LORA_TARGETS:
        for leaf in ("weight", "bias"):
            if key.endswith(f".{target}.{leaf}"):
                return key[:-len(leaf)] + f"linear.{leaf}"
    return None


def fresh_lora(student_shapes: Dict[str, torch.Size], rank: int) -> Dict[str, torch.Tensor]:
    """New LoRA tensors in the release's initialisation: ``lora_down ~ N(0, (1/r)^2)``, ``lora_up = 0``."""
    out = {}
    for k, shape in student_shapes.items():
        if ".lora_down." in k:
            out[k] = torch.empty(shape).normal_(std=1.0 / rank)
        elif ".lora_up." in k:
            out[k] = torch.zeros(shape)
    return out


def student_from_files(settings: VARestorerSettings, infinity_file, vae_file, swinir_file=None,
                       drop_path_rate: float = 0.0) -> VARestorer:
    """The student from the pre-trained files (paths or loaded dicts), strict per file, built on the meta device
    and assigned; the LoRA tensors freshly initialised."""
    if not settings.lora_rank:
        raise CheckpointMismatchError("the distillation trains LoRA: model.lora_rank must be > 0")
    files = {"transformer": infinity_file, "vae": vae_file, "swinir": swinir_file}
    raw = {part: (read_torch_file(f) if isinstance(f, (str, bytes)) or hasattr(f, "__fspath__") else f)
           for part, f in files.items() if f is not None}
    sources = {part: (str(f) if not isinstance(f, dict) else f"the {part} state dict") for part, f in files.items()
               if f is not None}
    if settings.swinir and "swinir" not in raw:
        raise CheckpointMismatchError("model.swinir=true needs general_swinir_v1.ckpt (model.swinir_path)")
    src = sources["transformer"]
    inf_sd = raw["transformer"]
    if not isinstance(inf_sd, dict):
        raise CheckpointMismatchError(f"{src} is not a state dict")
    lay = infinity_layout(inf_sd, src)
    if lay["lora_rank"] or any(LORA_KEY.search(k) for k in inf_sd):
        raise CheckpointMismatchError(f"{src} already holds LoRA tensors (varestorer.pth?): the distillation starts "
                                      "from the plain pre-trained Infinity, infinity_2b_reg.pth")
    want = {k: getattr(settings, k) for k in ("depth", "embed_dim", "num_heads", "text_channels", "block_chunks",
                                              "codebook_dim")}
    got = {k: lay[k] for k in want}
    if got != want:
        raise CheckpointMismatchError(f"{src} is an Infinity of {got}, the model config asks for {want}")
    with torch.device("meta"):
        model = VARestorer(**settings.constructor_kwargs(), drop_path_rate=drop_path_rate)
    state: Dict[str, torch.Tensor] = {}
    for k, v in strip_infinity_buffers(inf_sd, settings.text_maxlen, src).items():
        state["transformer." + (_lora_key(k) or k)] = v
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    state.update(fresh_lora(shapes, settings.lora_rank))
    vae_sd = bsq_vae_from_official(unwrap_vae_file(raw["vae"], sources["vae"]), sources["vae"])
    lay_vae = bsq_vae_layout(vae_sd, sources["vae"])
    if (lay_vae["base_ch"], lay_vae["ch_mult"], lay_vae["z_channels"]) != (
            settings.vae_base_ch, list(settings.vae_ch_mult), settings.codebook_dim):
        raise CheckpointMismatchError(f"{sources['vae']} is a BSQ-VAE of {lay_vae}, the model config asks for "
                                      f"base {settings.vae_base_ch}, mult {settings.vae_ch_mult}")
    state.update({f"vae.{k}": v for k, v in vae_sd.items()})
    if settings.swinir:
        sw = unwrap_swinir_file(raw["swinir"])
        swinir_layout(sw)        # refuses a file that is not DiffBIR's SwinIR
        state.update({f"swinir.{k}": v for k, v in swinir_from_official(sw, settings.swinir_window).items()})
    else:
        sources.pop("swinir", None)
    load_parts(model, state, sources)
    return model


def freeze_for_distillation(student: VARestorer) -> List[str]:
    """Only the LoRA tensors train; returns their names."""
    student.requires_grad_(False)
    names = []
    for name, p in student.named_parameters():
        if ".lora_down." in name or ".lora_up." in name:
            p.requires_grad_(True)
            names.append(name)
    if not names:
        raise CheckpointMismatchError("the student has no LoRA tensors to train (model.lora_rank=0?)")
    return names


def cast_frozen_blocks(student: VARestorer, dtype: torch.dtype) -> int:
    """The release's bf16 blocks (it casts its blocks to bf16; LoRA, embeddings, head, VAE and SwinIR stay float32):
    the frozen linear weights of the blocks are stored in ``dtype`` (what holds the memory; they then need an
    autocast of ``dtype``), the blocks' other frozen tensors (biases, norms, ``ada_gss``, ``scale_mul``) get
    ``dtype``'s values but stay float32, so the ops that take them outside the autocast's matmuls (e.g. a
    LayerNorm on CPU) see one dtype. Returns how many tensors are stored in ``dtype``."""
    n = 0
    with torch.no_grad():
        for name, p in student.transformer.named_parameters():
            if not name.startswith(("block_chunks.", "blocks.")) or p.requires_grad or p.dtype == dtype:
                continue
            if p.ndim == 2:
                p.data = p.data.to(dtype)
                n += 1
            else:
                p.copy_(p.to(dtype).to(p.dtype))
    return n


def _plain_name(student_key: str) -> str:
    return student_key.replace(".linear.", ".")


def teacher_of(student: VARestorer, shared: bool = True) -> Infinity:
    """The frozen plain Infinity of the student's base, eval mode (value bias on in its text cross-attention, as
    the pre-trained model has it). ``shared``: its parameters are the student's frozen ``nn.Parameter`` objects."""
    t = student.transformer
    with torch.device("meta"):
        teacher = Infinity(depth=t.depth, embed_dim=t.C, num_heads=t.num_heads, text_channels=t.text_channels,
                           text_maxlen=t.text_maxlen, block_chunks=t.num_chunks, codebook_dim=t.codebook_dim,
                           patch_nums=t.patch_nums)
    base = {_plain_name(n): p for n, p in t.named_parameters() if ".lora_" not in n}
    own = dict(teacher.named_parameters())
    if set(base) != set(own):
        raise CheckpointMismatchError(f"the student's base does not fit a plain Infinity: "
                                      f"{sorted(set(base) ^ set(own))[:4]}")
    for name, p in base.items():
        owner, _, leaf = name.rpartition(".")
        module = teacher.get_submodule(owner)
        if p.requires_grad:
            raise CheckpointMismatchError(f"the student's {name} trains; freeze the student before tying the teacher")
        module._parameters[leaf] = p if shared else nn.Parameter(p.detach().clone(), requires_grad=False)
    return teacher.eval()


def lora_modules(student: VARestorer) -> List[LoraLinear]:
    return [m for m in student.transformer.modules() if isinstance(m, LoraLinear)]


def checkpoint_frozen(modules: Iterable[nn.Module]) -> int:
    """Recompute the activations of frozen modules in backward (the decoder and LPIPS between the student's
    logits and the pixel losses hold gigabytes at 512 px); the shared helper only wraps modules that train.
    Wraps each ``forward`` in place; returns how many were wrapped."""
    n = 0
    for m in modules:
        if getattr(m, "_checkpointed", False):
            continue
        inner = m.forward

        def forward(*args, _inner=inner):
            if torch.is_grad_enabled() and any(torch.is_tensor(a) and a.requires_grad for a in args):
                return checkpoint(_inner, *args, use_reentrant=False)
            return _inner(*args)

        m.forward = forward
        m._checkpointed = True
        n += 1
    return n


def decoder_checkpoint_units(student: VARestorer) -> List[nn.Module]:
    """The decoder's residual blocks and upsamplers (one recompute unit each)."""
    dec = student.vae.decoder
    units: List[nn.Module] = [dec.mid.block_1, dec.mid.block_2]
    for level in dec.up:
        units += list(level.block) + ([level.upsample] if hasattr(level, "upsample") else [])
    return units
