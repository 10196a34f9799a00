"""Typed configuration: OmegaConf structured dataclasses, YAML files merged over them, ``key.sub=value`` overrides.

A config is for one method (``method:``, default this project's own): ``data``, ``train`` and ``eval`` are shared,
``model``, ``train.loss`` and ``demo`` are the method's (its ``MethodSpec``), so a misspelled key stops start-up
with the key's full name and the closest valid one; a value of the wrong type stops start-up with the key's full name and the closest valid one; a value of the wrong type
names the key and the expected type. ``load_config`` is the one entry point; every run saves what it resolved
with ``save_config`` as ``config.yaml`` in its output folder, so a run can always be reproduced from its folder.
"""
from __future__ import annotations

import dataclasses
import difflib
import os
import typing
import warnings
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from varformer.errors import ConfigError  # re-exported: varformer.config.ConfigError
from varformer.files import write_text_atomic
from varformer.methods import registry
from varformer.methods.api import DemoKnobs, MethodSpec, NoLossKnobs


# ---------------------------------------------------------------------------------------------------------------
# Sections every method shares; ``model:``, ``train.loss:`` and ``demo:`` are typed by the method's spec
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class DataConfig:
    root: Optional[str] = None          # training data root (official layouts), or "demo:train" (stage 2) /
                                        # "demo:train/clean" (stage 1) for the built-in demo set
    tasks: List[str] = field(default_factory=lambda: ["blur", "lowlight", "realnoise", "rain", "noise", "haze"])
    task_weights: List[float] = field(default_factory=list)  # empty: equal probabilities (the official intent)
    crop_size: int = 256
    resize_short: int = 0               # > 0: first resize both images so the short side is this (Lanczos, aspect
                                        # kept), as RestoreVAR does (576 before its 512 crops); 0: off
    flip: bool = False                  # official stage 2: no flips, no rotations
    rot90: bool = False
    batch_size: int = 16                # per process
    num_workers: int = 4
    pin_memory: bool = True
    persistent_workers: bool = True


@dataclass
class TrainConfig:
    output_dir: str = "runs/varformer"
    total_iters: int = 700_000
    lr: float = 1e-4
    betas: List[float] = field(default_factory=lambda: [0.9, 0.99])
    weight_decay: float = 0.0
    milestones: List[int] = field(default_factory=lambda: [400_000, 450_000])
    gamma: float = 0.5
    optimizer: str = "adam"             # "adam" or "adamw" (RestoreVAR: AdamW, weight decay on matrices only)
    lr_schedule: str = "multistep"      # "multistep" (milestones x gamma) or "lin0" (VAR's warm-up/hold/linear decay)
    warmup_iters: int = 0               # lin0: warm-up length
    warmup_start: float = 0.005         # lin0: lr factor at iteration 0 (RestoreVAR: 1.0, a flat warm-up)
    lr_end: float = 0.01                # lin0: lr factor at the last iteration
    ema_decay: float = 0.998
    seed: int = 114514
    global_batch_size: int = 0          # images per optimiser step over all processes (official: 8 stage 1, 64
                                        # stage 2); data.batch_size is then the per-process micro-batch that fits
                                        # and gradients accumulate up to it; 0: data.batch_size x processes
    precision: str = "auto"             # "auto" (bf16 where the device has native bf16, else fp32), "bf16", "fp32"
    grad_checkpointing: bool = False    # recompute activations in backward (the official batch needs it on 80 GB)
    grad_clip: float = 0.0              # 0: off (official)
    fused_adam: bool = True             # CUDA only: one fused kernel for the Adam update
    find_unused_parameters: bool = False  # DDP: only needed if a trainable module gets no gradient
    save_every: int = 10_000
    keep_last: int = 3
    resume: str = "auto"                # "auto" (latest valid checkpoint in output_dir), "none", or a path
    log_every: int = 100
    image_every: int = 1_000            # TensorBoard image grid (LQ | output | GT) and DAE-weight plot; 0: never
    val_every: int = 5_000              # validation on the held-out set with the EMA weights; 0: never
    val_images: int = 16
    val_at_start: bool = False          # also validate the initial weights (step 0), e.g. to see the gain
    max_seconds: float = 0.0            # stop (with a checkpoint) after this much wall time; 0: no limit
    device: str = "auto"                # "auto", "cpu", "cuda"
    # loss: the method's loss settings (its spec's loss_config), added by config_class


@dataclass
class EvalConfig:
    protocol: str = "paper"             # "paper", "full" or a preset: varformer-code, restormer, diffuir, airnet, restorevar
    benchmarks: List[str] = field(default_factory=list)
    root: Optional[str] = None
    tile: int = 256
    overlap: int = 32
    batch_size: int = 4
    precision: str = "auto"             # "auto" (bf16 where the device has native bf16, else fp32), "bf16", "fp32"
    lpips: bool = False
    save_images: bool = False
    output_dir: str = "outputs/eval"


_CLASSES: dict = {}


def config_class(spec: MethodSpec) -> type:
    """The typed config of a method: the shared sections, and ``model:`` / ``train.loss:`` / ``demo:`` of its
    spec (one class per method, made once)."""
    if spec.name not in _CLASSES:
        loss = spec.loss_config or NoLossKnobs
        demo = spec.demo_config or DemoKnobs
        train = dataclasses.make_dataclass(f"TrainConfig[{spec.name}]",
                                           [("loss", loss, field(default_factory=loss))], bases=(TrainConfig,))
        _CLASSES[spec.name] = dataclasses.make_dataclass(f"Config[{spec.name}]", [
            ("method", str, field(default=spec.name)),
            ("model", spec.model_config, field(default_factory=spec.model_config)),
            ("data", DataConfig, field(default_factory=DataConfig)),
            ("train", train, field(default_factory=train)),
            ("eval", EvalConfig, field(default_factory=EvalConfig)),
            ("demo", demo, field(default_factory=demo))])
    return _CLASSES[spec.name]


# ---------------------------------------------------------------------------------------------------------------
# Loading and validation
# ---------------------------------------------------------------------------------------------------------------
def _field_types(cls: type) -> Dict[str, type]:
    """Field name -> its type, string annotations resolved (``from __future__ import annotations``)."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints.get(f.name, f.type) for f in dataclasses.fields(cls)}


def _check_keys(data: Any, cls: type, prefix: str, source: str) -> None:
    """Walk a plain dict against the dataclass tree; unknown keys raise with the closest valid name."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: '{prefix or '<root>'}' must be a mapping of keys, got {type(data).__name__}")
    fields = _field_types(cls)
    for key, value in data.items():
        full = f"{prefix}.{key}" if prefix else str(key)
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1, cutoff=0.5)
            hint = f"; did you mean '{prefix + '.' if prefix else ''}{close[0]}'?" if close else ""
            valid = ", ".join(sorted(fields))
            raise ConfigError(f"{source}: unknown config key '{full}'{hint} (valid keys here: {valid})")
        sub = fields[key]
        if dataclasses.is_dataclass(sub) and value is not None:
            _check_keys(value, sub, full, source)


# keys that moved: old dotted name -> new one (a warning, then the value is used under the new name)
MOVED_KEYS = {"model.input_weight_init": "demo.input_weight_init",
              "train.input_weight_lr_scale": "demo.input_weight_lr_scale",
              "data.task_order": "demo.task_order"}
# keys that are gone: old dotted name -> what to write instead
REMOVED_KEYS = {"data.demo": "data.root=demo:train (stage 2) or data.root=demo:train/clean (stage 1)",
                "data.demo_cache": "data.root=<demo folder>/train (or /train/clean for stage 1)"}


def _move_deprecated(data: dict, source: str, method: Optional[str] = None) -> dict:
    """Today's layout (``varformer.methods.registry.current_layout``), moved keys rewritten (with a warning),
    removed ones refused with what to write instead."""
    data, moved = registry.current_layout(data, method)
    if moved:
        warnings.warn(f"{source}: a config of version 0.1 ({'; '.join(moved)}): read in today's layout (a "
                      "top-level 'method:' and the method's settings under 'model:')", DeprecationWarning,
                      stacklevel=4)
    for old, instead in REMOVED_KEYS.items():
        section, key = old.split(".")
        if isinstance(data.get(section), dict) and key in data[section]:
            raise ConfigError(f"{source}: config key '{old}' was removed; use {instead}")
    for old, new in MOVED_KEYS.items():
        section, key = old.split(".")
        if isinstance(data.get(section), dict) and key in data[section]:
            warnings.warn(f"{source}: config key '{old}' is now '{new}' (a knob for short demo runs)",
                          DeprecationWarning, stacklevel=4)
            value = data[section].pop(key)
            new_section, new_key = new.split(".")
            data.setdefault(new_section, {})
            data[new_section] = dict(data[new_section] or {}, **{new_key: value})
    return data


def _expected_type(cls: type, full_key: str) -> str:
    parts = full_key.split(".")
    for i, part in enumerate(parts):
        t = _field_types(cls).get(part)
        if t is None:
            return "?"
        if i == len(parts) - 1:
            return getattr(t, "__name__", str(t).replace("typing.", ""))
        cls = t
    return "?"


def _merge(base: DictConfig, data: dict, source: str) -> DictConfig:
    cls = OmegaConf.get_type(base)
    _check_keys(data, cls, "", source)
    try:
        return OmegaConf.merge(base, OmegaConf.create(data))
    except ValidationError as e:
        key = getattr(e, "full_key", None) or "?"
        raise ConfigError(f"{source}: config key '{key}' expects {_expected_type(cls, key)}, "
                          f"got {getattr(e, 'msg', str(e)).splitlines()[0]}") from None
    except ConfigKeyError as e:  # pragma: no cover - _check_keys catches these first
        raise ConfigError(f"{source}: {e}") from None


def _parse_overrides(overrides: Sequence[str]) -> dict:
    for item in overrides:
        if "=" not in item or item.startswith("="):
            raise ConfigError(f"override '{item}' is not of the form key.sub=value")
    try:
        return OmegaConf.to_container(OmegaConf.from_dotlist(list(overrides)))
    except OmegaConfBaseException as e:
        raise ConfigError(f"cannot parse overrides {list(overrides)}: {e}") from None


RECIPES_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")


def recipe_path(path: str) -> str:
    """A config file: the path itself, or for ``configs/NAME.yaml`` / ``NAME.yaml`` / ``NAME`` (also
    ``configs/ablations/NAME``) a recipe shipped in the package (``varformer/configs``, which ``configs/`` of a
    checkout links to), so the README's commands work from any folder and from a non-editable install."""
    if os.path.isfile(path):
        return path
    rel = path[len("configs/"):] if path.startswith("configs/") else path   # configs/ablations/NAME too
    rel = rel if rel.endswith(".yaml") else rel + ".yaml"
    shipped = os.path.join(RECIPES_DIR, rel)
    if not os.path.isabs(path) and os.path.isfile(shipped):
        return shipped
    known = ", ".join(sorted(os.path.relpath(os.path.join(d, f), RECIPES_DIR) for d, _, files in os.walk(RECIPES_DIR)
                             for f in files if f.endswith(".yaml")))
    raise ConfigError(f"config file not found: {path} (the shipped recipes: {known})")


def _read_yaml(path: str) -> dict:
    try:
        data = OmegaConf.to_container(OmegaConf.load(path)) or {}
    except (OmegaConfBaseException, yaml.YAMLError) as e:
        raise ConfigError(f"{path}: not valid YAML for a config: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config is a mapping of sections, got {type(data).__name__}")
    return data


def _typed(parts: Sequence[Tuple[dict, str]]) -> DictConfig:
    """Defaults of the method the parts name (the last that names one wins) <- each part in order."""
    name = registry.DEFAULT
    for data, _ in parts:  # the last part that names a method wins (a file, then the command line)
        named = "method" in data or isinstance(data.get("model"), dict) and "method" in data["model"]
        name = registry.method_of_config(data) if named else name
    parts = [(_move_deprecated(data, source, name), source) for data, source in parts]
    cfg = OmegaConf.structured(config_class(registry.get(name)))
    for data, source in parts:
        cfg = _merge(cfg, data, source)
    try:
        OmegaConf.to_container(cfg, resolve=True)  # an interpolation that cannot be resolved fails here, in one line
    except OmegaConfBaseException as e:
        where = " + ".join(source for _, source in parts) or "config"
        key = getattr(e, "full_key", None)
        raise ConfigError(f"{where}: {key + ': ' if key else ''}{str(e).splitlines()[0]}") from None
    return cfg


def load_config(path: Optional[str] = None, overrides: Sequence[str] = ()) -> DictConfig:
    """Defaults of the config's method <- YAML file (if any) <- ``key.sub=value`` overrides; validated against
    the method's typed sections."""
    parts = []
    if path is not None:
        path = recipe_path(path)
        parts.append((_read_yaml(path), path))
    if overrides:
        parts.append((_parse_overrides(overrides), "command line"))
    cfg = _typed(parts)
    OmegaConf.set_readonly(cfg, False)
    return cfg


def method_of(cfg) -> MethodSpec:
    """The ``MethodSpec`` a loaded config is for."""
    return registry.get(cfg.method)


def to_yaml(cfg: DictConfig) -> str:
    return OmegaConf.to_yaml(cfg)


def config_from_yaml(text: str, source: str) -> DictConfig:
    """A resolved config saved as YAML (a run's ``config.yaml``, a checkpoint's ``config``) read back over the
    defaults, so keys added since it was written compare as their defaults."""
    try:
        data = OmegaConf.to_container(OmegaConf.create(text)) or {}
    except (OmegaConfBaseException, yaml.YAMLError) as e:
        raise ConfigError(f"{source}: not valid YAML for a config: {str(e).splitlines()[0]}") from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # moved keys of an older run: compared at their new name
        return _typed([(data, source)])


def flat_items(cfg: DictConfig) -> dict:
    """``{"train.lr": 0.0001, ...}``: every leaf of a config under its dotted name."""
    out = {}

    def walk(node, prefix):
        for key, value in node.items():
            name = f"{prefix}{key}"
            if isinstance(value, dict):
                walk(value, name + ".")
            else:
                out[name] = value

    walk(OmegaConf.to_container(cfg, resolve=True), "")
    return out


def config_differences(old: DictConfig, new: DictConfig, ignore: Sequence[str] = ()) -> List[tuple]:
    """``(key, old value, new value)`` for every leaf that differs, except keys in ``ignore`` (a dotted name, or a
    section name ending in a dot: ``"eval."``)."""
    a, b = flat_items(old), flat_items(new)
    skip = lambda k: k in ignore or any(i.endswith(".") and k.startswith(i) for i in ignore)  # noqa: E731
    return [(k, a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if not skip(k) and a.get(k) != b.get(k)]


def save_config(cfg: DictConfig, out_dir: str) -> str:
    """Write ``config.yaml`` into ``out_dir`` (atomically) and return its path."""
    path = os.path.join(out_dir, "config.yaml")
    write_text_atomic(path, to_yaml(cfg))
    return path
