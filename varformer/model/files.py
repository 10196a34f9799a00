"""VarFormer's weights files: our model files (``varformer.checkpoints`` layout, format ``varformer``), the
released BasicSR checkpoint (converted on the fly), training checkpoints (their EMA weights).

    save_varformer("runs/s2/final_ema.pt", model)                 # settings + every tensor, atomic
    settings, sd = read_varformer(path)                           # ours, or the official file converted
    model = load_varformer(path, expect_stage=2)                  # eval mode, strict
    model = load_official("net_g_last.pth")                       # the released file, layout inferred
    model = restorer_model(info)                                  # any of them as a restorer (the method spec's)
"""
from __future__ import annotations

import os
from typing import Dict, Mapping, Optional, Tuple

import torch
from torch import nn

from varformer.checkpoints import architecture_differences, ema_weights, open_weights, save_model_file, strict_load
from varformer.errors import CheckpointMismatchError, WeightsNotFoundError
from varformer.methods.api import ForeignFile, WeightsFile
from varformer.model.convert import infer_official_layout, map_official, read_official
from varformer.model.settings import STAGE_CLASSES, STAGE_DESCRIPTIONS, VarFormerSettings, architecture_of
from varformer.model.varformer import build_varformer

METHOD = "varformer"          # the format marker of our model files = the method's registry name
OFFICIAL_PREFIXES = ("Mainencoder.", "main_decoder.", "ft_layers.", "cross_attn_blocks.")
EXPLAIN = architecture_differences(architecture_of)   # "depth: checkpoint 16, model 20" in load errors
RELEASE_HINT = ("the released VarFormer weights are `net_g_last.pth` from https://huggingface.co/wsy541/VarFormer "
                "(convert with `varformer convert official net_g_last.pth -o checkpoints/varformer_d16.pt`, or pass "
                "the file directly)")


def describe(settings: VarFormerSettings) -> str:
    """"stage-2 VarFormer (VAR depth 16, width 160, 8 cross-attention blocks)": what a file's model is."""
    s = settings
    stage = STAGE_DESCRIPTIONS[s.stage].split(" (")[0]
    return (f"{stage} VarFormer (VAR depth {s.depth}, width {s.vae_ch}, {s.n_cross} cross-attention blocks"
            + ("" if s.stage == 1 else "" if (s.prior, s.aft, s.mixup_skip) == ("dae", True, True)
               else f", ablation prior={s.prior} aft={s.aft} mixup_skip={s.mixup_skip}") + ")")


def load_weights(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str = "state dict",
                 assign: bool = False) -> None:
    """Strict load into a VarFormer model, refusing the other stage with a message naming both."""
    got = architecture_of(state_dict)["stage"]
    own = model.settings().stage if hasattr(model, "settings") else got
    if got != own:
        raise CheckpointMismatchError(
            f"{source} is a {STAGE_DESCRIPTIONS[got]} checkpoint, but a {STAGE_DESCRIPTIONS[own]} model was asked "
            f"for; load it with {STAGE_CLASSES[got]} instead")
    strict_load(model, state_dict, source, assign=assign, explain=EXPLAIN)


def convert_official(sd: Dict[str, torch.Tensor], with_report: bool = False):
    """Official state dict -> (architecture dict, our state dict) [, ``ConversionReport``]: strict, every tensor
    placed or dropped as inert, every tensor of a model of the inferred layout filled with the right shape."""
    arch = infer_official_layout(sd)
    with torch.device("meta"):
        model = build_varformer(VarFormerSettings(**arch))
    return map_official(sd, {k: t.shape for k, t in model.state_dict().items()}, with_report=with_report)


def build_from_state_dict(settings: VarFormerSettings, state_dict: Mapping[str, torch.Tensor],
                          source: str = "checkpoint", expect_stage: Optional[int] = None) -> nn.Module:
    """The model of ``settings`` built on the meta device with the tensors assigned (strict), in eval mode."""
    if expect_stage is not None and settings.stage != expect_stage:
        raise CheckpointMismatchError(
            f"{source} is a {STAGE_DESCRIPTIONS[settings.stage]} checkpoint, but a {STAGE_DESCRIPTIONS[expect_stage]} "
            f"model was asked for; load it with {STAGE_CLASSES[settings.stage]} instead")
    with torch.device("meta"):
        model = build_varformer(settings)
    load_weights(model, state_dict, source, assign=True)
    return model.eval()


def save_varformer(path: str | os.PathLike, model: nn.Module) -> str:
    """Write ``model`` with its settings (``.safetensors`` by extension, else a weights_only-loadable torch file)."""
    if getattr(model, "weights_precision", "fp32") != "fp32":
        raise ValueError("this model holds bf16 weights for inference (prepare_inference); checkpoints are "
                         "written from float32 weights")
    return save_model_file(path, METHOD, model.settings().to_metadata(), model.state_dict())


def read_varformer(path: str | os.PathLike) -> Tuple[VarFormerSettings, Dict[str, torch.Tensor]]:
    """(settings, our state dict) from our model file, or converted from an official BasicSR / raw checkpoint."""
    if not os.path.isfile(path):
        raise WeightsNotFoundError(f"checkpoint {path} does not exist; {RELEASE_HINT}")
    f = open_weights(path)
    if f.format == METHOD:
        return VarFormerSettings.from_metadata(f.metadata, str(path)), f.tensors()
    if f.format is not None:
        raise CheckpointMismatchError(f"{path} is a {f.format} model file, not a VarFormer one")
    if f.is_safetensors:
        raise CheckpointMismatchError(f"{path} has no VarFormer config in its metadata")
    arch, state_dict = convert_official(read_official(f.content, source=str(path)))
    return VarFormerSettings(**arch), state_dict


def load_varformer(path: str | os.PathLike, expect_stage: Optional[int] = None, **overrides) -> nn.Module:
    """Our checkpoint (or an official one) as the model class its settings name, in eval mode. ``expect_stage``
    (1 or 2) refuses the other stage; ``overrides`` may set the inference settings ``cfg`` or ``head_layout``."""
    settings, state_dict = read_varformer(path)
    bad = set(overrides) - set(VarFormerSettings.INFERENCE)
    if bad:
        raise ValueError(f"load_varformer can only override {', '.join(VarFormerSettings.INFERENCE)}, "
                         f"got {sorted(bad)}")
    return build_from_state_dict(settings.replace(**overrides), state_dict, str(path), expect_stage)


def load_official(path_or_state_dict, key: Optional[str] = None, cfg: float = 0.5, head_layout: str = "official",
                  expect_stage: Optional[int] = None, map_location="cpu") -> nn.Module:
    """A model from the released BasicSR checkpoint (``params_ema`` unless ``key`` says otherwise), a raw official
    state dict, or a file holding one; the layout is inferred from the tensors, the load is strict."""
    source = str(path_or_state_dict) if isinstance(path_or_state_dict, (str, os.PathLike)) else "official state dict"
    arch, state_dict = convert_official(read_official(path_or_state_dict, key=key, map_location=map_location))
    return build_from_state_dict(VarFormerSettings(**arch, cfg=cfg, head_layout=head_layout), state_dict, source,
                                 expect_stage)


# ---------------------------------------------------------------------------------------------------------------
# What the registry asks of the method
# ---------------------------------------------------------------------------------------------------------------
def recognize(obj) -> Optional[ForeignFile]:
    """The released BasicSR checkpoint (or an official state dict) among loaded files."""
    if isinstance(obj, dict) and ("params" in obj or "params_ema" in obj):
        return ForeignFile("official", "the official VarFormer checkpoint (BasicSR layout)")
    if isinstance(obj, dict) and any(isinstance(k, str) and k.startswith(OFFICIAL_PREFIXES) for k in obj):
        return ForeignFile("official", "an official VarFormer state dict")
    return None


def not_a_restorer(info: WeightsFile) -> str:
    """The one line for a VarFormer file that is not a stage-2 model: what it is and which file to use."""
    if info.settings is not None and info.settings.stage == 1:
        return (f"{info.path} is {info.describe()}: it is not a restorer (stage 1 trains the Adapter only); train "
                f"stage 2 from it (model.stage1_weights={info.path}) and restore with that run's final_ema.pt")
    return (f"{info.path} is {info.describe()}; a restorer is a stage-2 VarFormer: a run's final_ema.pt or "
            f"ckpt_*.pt, or the released net_g_last.pth (converted with 'varformer convert official')")


def model_from_training_checkpoint(info: WeightsFile) -> nn.Module:
    """The run's model with its EMA weights. A checkpoint holds what its run trained (plus a random-init backbone,
    which exists nowhere else); the frozen rest comes from where the run took it: ``model.weights`` or the VQVAE
    and VAR files of its config."""
    model_cfg = (info.config or {}).get("model") or {}
    state = ema_weights(info.content)
    with torch.device("meta"):
        model = build_varformer(info.settings)
    missing = set(model.state_dict()) - set(state)
    if missing and model_cfg.get("weights"):
        _, base = read_varformer(model_cfg["weights"])
        state = {**{k: v for k, v in base.items() if k in missing}, **state}
    elif missing and any(k.startswith(("vae.", "var.")) for k in missing):
        try:
            model.load_backbone(model_cfg.get("vae_path"), model_cfg.get("var_path"),
                                local_files_only=bool(model_cfg.get("local_files_only")))
        except WeightsNotFoundError as e:
            raise WeightsNotFoundError(
                f"{info.path} is {info.describe()}: it holds only the weights its run trained, and the frozen "
                f"VQVAE/VAR it needs are missing here ({e}); or use the run's final_ema.pt, a complete model "
                "file") from None
    model.load_state_dict(state, strict=False, assign=True)
    left = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if left:
        raise CheckpointMismatchError(
            f"{info.path} is {info.describe()}: {len(left)} frozen tensors (e.g. {left[0]}) came from a file its "
            f"run loaded (model.stage1_weights?) and are not in it; use the run's final_ema.pt, a complete model "
            "file")
    return model.eval()


def model_from_file(info: WeightsFile, expect_stage: Optional[int] = None) -> nn.Module:
    """A VarFormer in eval mode from our model file, the official checkpoint or a training checkpoint."""
    if expect_stage is not None and info.settings is not None and info.settings.stage != expect_stage:
        raise CheckpointMismatchError(not_a_restorer(info) if expect_stage == 2 else
                                      f"{info.path} is {info.describe()}, not a stage-{expect_stage} model")
    if info.kind == "training":
        return model_from_training_checkpoint(info)
    if info.kind == "model":
        return build_from_state_dict(info.settings, info.content.tensors(), info.path, expect_stage)
    if info.kind == "official":
        arch, state_dict = convert_official(read_official(info.content.content, source=info.path))
        settings = VarFormerSettings(**arch)
        if expect_stage is not None and settings.stage != expect_stage:
            raise CheckpointMismatchError(f"{info.path} is the official stage-{settings.stage} VarFormer layout, not "
                                          f"a stage-{expect_stage} model")
        return build_from_state_dict(settings, state_dict, info.path)
    raise CheckpointMismatchError(not_a_restorer(info) if expect_stage == 2 else
                                  f"{info.path} is {info.describe()}")


def restorer_model(info: WeightsFile) -> nn.Module:
    return model_from_file(info, expect_stage=2)
