"""RestoreVAR's weights files: our model files (``varformer.checkpoints`` layout, format ``restorevar``; RestoreVAR
files of version 0.1 were torch files of the same layout, still read), training checkpoints (their EMA weights),
and what the registry asks of the method about other files.

    save_restorevar("checkpoints/restorevar.safetensors", model)    # settings + every tensor, atomic
    model = load_restorevar("checkpoints/restorevar.safetensors")    # eval mode, strict
    settings, sd = read_restorevar(path)                             # a model file or a training checkpoint
"""
from __future__ import annotations

import os
from typing import Any, Dict, Mapping, Optional, Tuple

import torch
from omegaconf import OmegaConf

from varformer.checkpoints import build_loaded, ema_weights, is_training_checkpoint, open_weights, save_model_file
from varformer.errors import CheckpointMismatchError, WeightsNotFoundError
from varformer.methods.api import ForeignFile, WeightsFile
from varformer.restorevar.model import EXPLAIN, RestoreVAR
from varformer.restorevar.settings import RestoreVARSettings
from varformer.restorevar.weights import ARCHIVE_URL

METHOD = "restorevar"      # the format marker of our model files = the method's registry name


def describe(settings: RestoreVARSettings) -> str:
    s = settings
    what = "stage-1 RestoreVAR (no refiner" if not s.refiner_depth else f"RestoreVAR (refiner depth {s.refiner_depth}"
    return f"{what}, VAR depth {s.depth}, width {s.embed_dim}, {s.image_size}x{s.image_size})"


def save_restorevar(path: str | os.PathLike, model: RestoreVAR) -> str:
    """Write ``model`` with its settings (``.safetensors`` by extension, else a weights_only-loadable torch file)."""
    return save_model_file(path, METHOD, model.settings().to_metadata(), model.state_dict())


def settings_of_run(config: Mapping[str, Any], source: str) -> RestoreVARSettings:
    """The model settings a RestoreVAR training run's saved config names (its ``model`` section)."""
    section = config.get("model") or {}
    try:
        return RestoreVARSettings(**{k: section[k] for k in RestoreVARSettings.NAMES if k in section}).validate()
    except Exception as e:  # a config this version cannot read
        raise CheckpointMismatchError(f"{source}: training checkpoint with an unreadable model config ({e})") from None


def read_restorevar(path: str | os.PathLike) -> Tuple[RestoreVARSettings, Dict[str, torch.Tensor]]:
    """(settings, state dict) of our RestoreVAR model file, or of a RestoreVAR training checkpoint (its EMA
    weights over the trained ones; the settings from the run's config)."""
    if not os.path.isfile(path):
        raise WeightsNotFoundError(
            f"RestoreVAR checkpoint {path} does not exist; convert the released files (restorevar.pth and "
            f"vae_restorevar.ckpt from the RestoreVAR README's checkpoints archive, {ARCHIVE_URL}) with "
            f"`varformer convert restorevar checkpoints/restorevar.pth --vae checkpoints/vae_restorevar.ckpt "
            f"-o checkpoints/restorevar.safetensors`, or train one (configs/restorevar_stage1.yaml, "
            f"restorevar_stage2.yaml)")
    f = open_weights(path)
    if f.format == METHOD:
        return RestoreVARSettings.from_metadata(f.metadata, str(path)), f.tensors()
    if is_training_checkpoint(f.content):
        config = OmegaConf.to_container(OmegaConf.create(f.content.get("config") or "{}")) or {}
        return settings_of_run(config, str(path)), ema_weights(f.content)
    raise CheckpointMismatchError(f"{path} is not a RestoreVAR checkpoint of this project (no 'format': "
                                  f"'{METHOD}' marker); official files go through `varformer convert restorevar`")


def build_restorevar(settings: RestoreVARSettings, state_dict: Mapping[str, torch.Tensor],
                     source: str = "state dict") -> RestoreVAR:
    """The model of ``settings`` built on the meta device with the tensors assigned (strict), in eval mode."""
    return build_loaded(lambda: RestoreVAR(**settings.constructor_kwargs()), state_dict, source, explain=EXPLAIN)


def load_restorevar(path: str | os.PathLike, expect_refiner: Optional[bool] = None) -> RestoreVAR:
    """Our checkpoint as a model (strict, eval mode); ``expect_refiner`` refuses a stage-1 (or full) model."""
    settings, state_dict = read_restorevar(path)
    if expect_refiner is not None and bool(settings.refiner_depth) != expect_refiner:
        have = "a stage-1 RestoreVAR (no refiner)" if not settings.refiner_depth else "a RestoreVAR with a refiner"
        raise CheckpointMismatchError(f"{path} is {have}; expected "
                                      + ("one with a refiner" if expect_refiner else "a stage-1 model"))
    return build_restorevar(settings, state_dict, str(path))


def restorer_model(info: WeightsFile) -> RestoreVAR:
    """A model file or training checkpoint of RestoreVAR as a restorer (a stage-1 model restores too: it decodes
    the sampled latent directly, the paper's "w/o refiner" ablation)."""
    if info.kind == "model":
        return build_restorevar(info.settings, info.content.tensors(), info.path)
    if info.kind == "training":
        state = ema_weights(info.content)
        with torch.device("meta"):
            model = RestoreVAR(**info.settings.constructor_kwargs())
        missing = sorted(set(model.state_dict()) - set(state))
        if missing:
            raise CheckpointMismatchError(
                f"{info.path} is {info.describe()}: it holds only the weights its run trained ({len(missing)} frozen "
                f"tensors such as {missing[0]} are not in it); restore with the run's final_ema.pt, a complete "
                "model file")
        return build_restorevar(info.settings, state, info.path)
    raise CheckpointMismatchError(f"{info.path} is {info.describe()}: convert the released files first "
                                  "(`varformer convert restorevar restorevar.pth --vae vae_restorevar.ckpt -o "
                                  "checkpoints/restorevar.safetensors`)")


def recognize(obj) -> Optional[ForeignFile]:
    """RestoreVAR's released ``restorevar.pth`` (a VAR state dict with its conditioning and refiner tensors)."""
    if isinstance(obj, dict) and any(isinstance(k, str) and k.startswith("vae_refiner.") for k in obj):
        return ForeignFile("official", "RestoreVAR's released restorevar.pth (convert it with 'varformer convert "
                                       "restorevar', together with vae_restorevar.ckpt)")
    return None
