"""VARestorer's weights files: our model files (``varformer.checkpoints`` layout, format ``varestorer``: the settings
and every tensor, the LoRA kept apart as the release stores it) and what the registry asks of the method about
other files (the release's ``varestorer.pth``; the BSQ-VAE, SwinIR and Infinity-2B files it is built from).

    save_varestorer("checkpoints/varestorer.safetensors", model)     # settings + every tensor, atomic
    model = load_varestorer("checkpoints/varestorer.safetensors")     # eval mode, strict
"""
from __future__ import annotations

import os
from typing import Any, Dict, Mapping, Optional, Tuple

import torch

from varformer.checkpoints import architecture_differences, build_loaded, open_weights, save_model_file
from varformer.errors import CheckpointMismatchError, WeightsNotFoundError
from varformer.methods.api import ForeignFile, WeightsFile
from varformer.varestorer.config import VARestorerModelConfig
from varformer.varestorer.convert import infer_varestorer_layout
from varformer.varestorer.model import VARestorer
from varformer.varestorer.restorer import VARestorerRestorer, runner_from_section
from varformer.varestorer.settings import VARestorerSettings
from varformer.varestorer.weights import SWINIR_FILE, VAE_FILE, VARESTORER_FILE

METHOD = "varestorer"      # the format marker of our model files = the method's registry name
CONVERT_COMMAND = (f"varformer convert varestorer checkpoints/{VARESTORER_FILE} --vae checkpoints/{VAE_FILE} "
                   f"--swinir checkpoints/{SWINIR_FILE} -o checkpoints/varestorer.safetensors")


def describe(settings: VARestorerSettings) -> str:
    s = settings
    clean = "SwinIR pre-cleaning" if s.swinir else "no pre-cleaning"
    return (f"VARestorer (Infinity depth {s.depth}, width {s.embed_dim}, LoRA rank {s.lora_rank}, {len(s.patch_nums)} "
            f"scales, {s.image_size}x{s.image_size}, {clean})")


def architecture_of(state_dict: Mapping[str, torch.Tensor]) -> Dict[str, Any]:
    """The transformer sizes a state dict of ours determines (for mismatch messages); {} when it has none."""
    official = {k[len("transformer."):]: v for k, v in state_dict.items() if k.startswith("transformer.")}
    try:
        return dict(infer_varestorer_layout(official))
    except (CheckpointMismatchError, KeyError, IndexError, AttributeError):
        return {}


def save_varestorer(path: str | os.PathLike, model: VARestorer) -> str:
    """Write ``model`` with its settings (``.safetensors`` by extension, else a weights_only-loadable torch file);
    the LoRA must not be merged (``to_official_varestorer`` needs it apart)."""
    if not isinstance(model, VARestorer):
        raise CheckpointMismatchError(f"save_varestorer takes a VARestorer, got {type(model).__name__}")
    return save_model_file(path, METHOD, model.settings().to_metadata(), model.state_dict())


def read_varestorer(path: str | os.PathLike) -> Tuple[VARestorerSettings, Dict[str, torch.Tensor]]:
    """(settings, state dict) of our VARestorer model file."""
    if not os.path.isfile(path):
        raise WeightsNotFoundError(f"VARestorer model file {path} does not exist; convert the released files with "
                                   f"`{CONVERT_COMMAND}`")
    f = open_weights(path)
    if f.format != METHOD:
        raise CheckpointMismatchError(f"{path} is not a VARestorer model file of this project (no 'format': "
                                      f"'{METHOD}' marker); official files go through `varformer convert varestorer`")
    return VARestorerSettings.from_metadata(f.metadata, str(path)), f.tensors()


def build_varestorer(settings: VARestorerSettings, state_dict: Mapping[str, torch.Tensor],
                     source: str = "state dict") -> VARestorer:
    """The model of ``settings`` built on the meta device with the tensors assigned (strict), in eval mode."""
    return build_loaded(lambda: VARestorer(**settings.constructor_kwargs()), state_dict, source,
                        explain=architecture_differences(architecture_of))


def load_varestorer(path: str | os.PathLike) -> VARestorer:
    settings, state_dict = read_varestorer(path)
    return build_varestorer(settings, state_dict, str(path))


def restorer_model(info: WeightsFile) -> VARestorerRestorer:
    """Our model file as a restorer: the model with the text and inference options of the default ``model:``
    section (captions of the inputs unless a prompt is set; the release's draws, 8-bit output)."""
    if info.kind == "model":
        model = build_varestorer(info.settings, info.content.tensors(), info.path)
        return runner_from_section(model, VARestorerModelConfig())
    raise CheckpointMismatchError(f"{info.path} is {info.describe()}: convert the released files first "
                                  f"(`{CONVERT_COMMAND}`)")


def _tensor_keys(obj: Any) -> Optional[set]:
    if not isinstance(obj, dict) or not obj or not all(isinstance(k, str) for k in obj):
        return None
    return set(obj) if all(hasattr(v, "shape") for v in obj.values()) else None


def recognize(obj: Any) -> Optional[ForeignFile]:
    """VARestorer's released ``varestorer.pth`` (official), and the files it is built from (backbone)."""
    keys = _tensor_keys(obj)
    if keys is not None and any(k.startswith("text_proj_for_sos.") for k in keys):
        if any(k.endswith(".lora_down.weight") for k in keys):
            return ForeignFile("official", f"VARestorer's released {VARESTORER_FILE} (convert it with "
                                           f"`{CONVERT_COMMAND}`)")
        return ForeignFile("backbone", "the pre-trained Infinity transformer (infinity_2b_reg.pth): VARestorer's "
                                       "frozen base, not needed to restore (its weights are inside varestorer.pth)")
    if isinstance(obj, dict) and isinstance(obj.get("vae"), dict) and \
            any(isinstance(k, str) and k.startswith("encoder.") for k in obj["vae"]):
        return ForeignFile("backbone", f"Infinity's BSQ-VAE ({VAE_FILE}): an input of `varformer convert varestorer` "
                                       "(--vae)")
    inner = obj.get("state_dict") if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict) else obj
    keys = _tensor_keys(inner)
    if keys is not None and any(k.removeprefix("module.").startswith("conv_first.") for k in keys) and \
            any(".residual_group." in k for k in keys):
        return ForeignFile("backbone", f"DiffBIR's SwinIR ({SWINIR_FILE}): an input of `varformer convert "
                                       "varestorer` (--swinir)")
    return None
