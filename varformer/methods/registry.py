"""The methods there are, and what a weights file is.

    names()                      # ("varformer", "restorevar", ...): built in, then the entry-point plug-ins
    spec = get("restorevar")     # its MethodSpec; an unknown name is one line listing the known ones
    info = inspect_weights(path) # read once: which method's file, and what kind (model, training, official, ...)

A method lives in one package and registers one ``MethodSpec`` (``varformer.methods.api``): the built-in ones
below, or any installed distribution's entry point in the group ``varformer.methods`` whose object is a
``MethodSpec`` (or a callable returning one), so a method may live in another repository (docs/extending.md).
This module and the method packages are the only places that name a method (tests/test_method_names.py).
"""
from __future__ import annotations

import dataclasses
import os
import warnings
from importlib import metadata
from typing import Any, Dict, Mapping, Optional, Tuple

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from varformer.backbone.hub import describe_backbone_state_dict
from varformer.backbone.vgg19 import is_vgg19_state_dict
from varformer.checkpoints import OpenedWeights, is_training_checkpoint, open_weights
from varformer.errors import CheckpointMismatchError, ConfigError
from varformer.methods.api import MethodSpec, WeightsFile
from varformer.model.spec import SPEC as VARFORMER_SPEC
from varformer.restorevar.spec import SPEC as RESTOREVAR_SPEC
from varformer.varestorer.spec import SPEC as VARESTORER_SPEC

ENTRY_POINT_GROUP = "varformer.methods"
BUILT_IN: Tuple[MethodSpec, ...] = (VARFORMER_SPEC, RESTOREVAR_SPEC, VARESTORER_SPEC)
DEFAULT = VARFORMER_SPEC.name        # the method of a config that names none (this project's own)

_loaded: Optional[Dict[str, MethodSpec]] = None


def _entry_points():
    try:
        return metadata.entry_points(group=ENTRY_POINT_GROUP)
    except TypeError:  # pragma: no cover - Python < 3.10 has no selection by group
        return metadata.entry_points().get(ENTRY_POINT_GROUP, [])


def _plug_in(ep) -> Optional[MethodSpec]:
    """The spec an entry point names; a broken plug-in is a warning naming it, not a crash of every command."""
    try:
        obj = ep.load()
        spec = obj() if callable(obj) and not isinstance(obj, MethodSpec) else obj
    except Exception as e:  # any import error of a third-party package
        warnings.warn(f"method plug-in '{ep.name}' ({ep.value}) could not be loaded: {type(e).__name__}: {e}")
        return None
    if not isinstance(spec, MethodSpec):
        warnings.warn(f"method plug-in '{ep.name}' ({ep.value}) is a {type(spec).__name__}, not a MethodSpec")
        return None
    return spec


def methods() -> Dict[str, MethodSpec]:
    """Every registered method by name: the built-in ones, then the plug-ins (loaded once per process)."""
    global _loaded
    if _loaded is None:
        found = {s.name: s for s in BUILT_IN}
        for ep in _entry_points():
            spec = _plug_in(ep)
            if spec is None:
                continue
            if spec.name in found:
                warnings.warn(f"method plug-in '{ep.name}' ({ep.value}) is named '{spec.name}', which is taken; "
                              "it is ignored")
                continue
            found[spec.name] = spec
        _loaded = found
    return _loaded


def reload() -> Dict[str, MethodSpec]:
    """Forget the loaded plug-ins and look again (after installing one in a running process, e.g. tests)."""
    global _loaded
    _loaded = None
    return methods()


def names() -> Tuple[str, ...]:
    return tuple(methods())


def get(name: str) -> MethodSpec:
    found = methods()
    if name not in found:
        raise ConfigError(f"unknown method '{name}'; the methods here: {', '.join(found)} (a plug-in registers "
                          f"through the '{ENTRY_POINT_GROUP}' entry-point group: docs/extending.md)")
    return found[name]


def method_of_model(model: Any) -> Optional[MethodSpec]:
    """The method a model belongs to, by the settings class its ``settings()`` returns (None: not a method's)."""
    settings = model.settings() if callable(getattr(model, "settings", None)) else None
    for spec in methods().values():
        if settings is not None and type(settings) is spec.settings:
            return spec
    return None


def stage_names() -> Tuple[str, ...]:
    """Every method's training stage names (``varformer train STAGE``), in registry order."""
    seen: Dict[str, None] = {}
    for spec in methods().values():
        for stage in spec.stage_names():
            seen[stage] = None
    return tuple(seen)


# ---------------------------------------------------------------------------------------------------------------
# Configs as plain dicts (a training checkpoint's saved config, a YAML file before it is typed)
# ---------------------------------------------------------------------------------------------------------------
def method_of_config(data: Mapping[str, Any]) -> str:
    """The method a config dict is for: its ``method`` key, or (configs of version 0.1) ``model.method``."""
    model = data.get("model") if isinstance(data.get("model"), Mapping) else {}
    name = data.get("method") or model.get("method") or DEFAULT
    if not isinstance(name, str):
        raise ConfigError(f"method must be a method's name, got {name!r}")
    return name


def current_layout(data: Mapping[str, Any], name: Optional[str] = None) -> Tuple[Dict[str, Any], list]:
    """A config dict in today's layout, and what was moved: configs of version 0.1 named the method in
    ``model.method`` and kept a second method's settings in a section named after it. ``name``: the method the
    dict is part of (overrides of a file), else its own."""
    data = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in data.items()}
    moved = []
    name = name or method_of_config(data)
    if isinstance(data.get("model"), dict) and "method" in data["model"]:
        data["model"].pop("method")
        moved.append("model.method -> method")
    if name != DEFAULT and isinstance(data.get(name), dict):
        data["model"] = {**(data.get("model") or {}), **data.pop(name)}
        moved.append(f"{name}: -> model:")
    if "method" in data or any(m.endswith("-> method") for m in moved):
        data["method"] = name
    return data, moved


# ---------------------------------------------------------------------------------------------------------------
# What a weights file is
# ---------------------------------------------------------------------------------------------------------------
def _training_file(f: OpenedWeights) -> WeightsFile:
    ck = f.content
    try:
        raw = OmegaConf.to_container(OmegaConf.create(ck.get("config") or "{}")) or {}
    except OmegaConfBaseException as e:
        raise CheckpointMismatchError(f"{f.path}: training checkpoint with an unreadable config ({e})") from None
    config, _ = current_layout(raw)
    try:
        spec = get(method_of_config(config))
    except ConfigError as e:
        raise CheckpointMismatchError(f"{f.path}: a training checkpoint of a method not installed here ({e})") from None
    section = config.get("model") or {}
    known = {k: v for k, v in section.items() if k in {n.name for n in dataclasses.fields(spec.settings)}}
    try:
        settings = spec.settings(**known)
        settings = settings.validate() if hasattr(settings, "validate") else settings
    except Exception as e:  # a config this version cannot read
        raise CheckpointMismatchError(f"{f.path}: training checkpoint with an unreadable model config ({e})") from None
    return WeightsFile(f.path, "training", spec, settings, ck, int(ck["step"]), config)


def inspect_weights(path: str | os.PathLike) -> WeightsFile:
    """Read ``path`` once (a ``.safetensors`` header, or a ``weights_only`` torch load with tensors memory-mapped)
    and say what it is; an unreadable file (truncated, random bytes, a pickle with code) raises
    ``CheckpointMismatchError`` in one line."""
    f = open_weights(path)
    path = f.path
    if f.format is not None:
        if f.format not in methods():
            return WeightsFile(path, "unknown", content=f, detail=f"a model file of the method '{f.format}', which "
                                                                  "is not installed here")
        spec = methods()[f.format]
        return WeightsFile(path, "model", spec, spec.settings.from_metadata(f.metadata, path), f)
    if f.is_safetensors:
        return WeightsFile(path, "unknown", content=f, detail="a .safetensors file without a method's settings")
    obj = f.content
    if not isinstance(obj, dict):
        return WeightsFile(path, "unknown", content=f, detail=f"holds a {type(obj).__name__}")
    if is_training_checkpoint(obj):
        return _training_file(f)
    for spec in methods().values():
        found = spec.recognize(obj)
        if found is not None:
            return WeightsFile(path, found.kind, spec if found.kind == "official" else None, content=f,
                               detail=found.detail)
    tensors = all(hasattr(v, "shape") for v in obj.values())
    backbone = describe_backbone_state_dict(obj) if tensors else None
    if backbone:
        return WeightsFile(path, "backbone", content=f, detail=backbone)
    if tensors and is_vgg19_state_dict(obj):
        return WeightsFile(path, "backbone", content=f, detail="torchvision's VGG19 weights (the perceptual loss), "
                                                              "not a checkpoint of a method")
    keys = ", ".join(sorted(map(str, obj))[:5])
    return WeightsFile(path, "unknown", content=f, detail=(f"{len(obj)} entries, e.g. {keys}" if tensors else
                                                           f"a dict with keys {keys}"))
