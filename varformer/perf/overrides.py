"""``varformer benchmark model --set key=value``: changes of the released settings a method's benchmark entry
gives, checked against the method's settings dataclass: an unknown name, a value of the wrong type or a combination
the settings' ``validate()`` refuses is a one-line error naming the method.

    per_method = split_overrides(["depth=2", "NAME.refiner_depth=1"], specs)  # {NAME: ["depth=2", ...], ...}
    settings = released_settings(spec, per_method[spec.name])                 # the released ones, changed

A plain ``key=value`` applies to every requested method whose settings have ``key`` (one of them at least must);
``NAME.key=value`` to method NAME only. Values are YAML: ``depth=2``, ``patch_nums=[1,2,3,4]``, ``aft=false``.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Sequence

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from varformer.errors import ConfigError
from varformer.methods.api import MethodSpec


def setting_names(spec: MethodSpec) -> List[str]:
    return [f.name for f in dataclasses.fields(spec.settings)] if dataclasses.is_dataclass(spec.settings) else []


def split_overrides(items: Sequence[str], specs: Sequence[MethodSpec]) -> Dict[str, List[str]]:
    """Each ``key=value`` of ``items`` under the methods it applies to (see the module docstring)."""
    out: Dict[str, List[str]] = {s.name: [] for s in specs}
    by_name = {s.name: s for s in specs}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. depth=2")
        head, dot, field = key.partition(".")
        if dot and head in by_name:
            targets, key = [by_name[head]], field
        elif dot:
            raise ConfigError(f"--set {item!r}: '{head}' is not one of the methods benchmarked here "
                              f"({', '.join(by_name)})")
        else:
            targets = [s for s in specs if key in setting_names(s)]
        if not targets or key not in setting_names(targets[0]):
            known = "; ".join(f"{s.name}: {', '.join(setting_names(s)) or 'none'}" for s in (targets or specs))
            raise ConfigError(f"--set {item!r}: '{key}' is not a setting of "
                              f"{' or '.join(s.name for s in (targets or specs))} (settings: {known})")
        for s in targets:
            out[s.name].append(f"{key}={value}")
    return out


def released_settings(spec: MethodSpec, items: Sequence[str] = ()) -> Any:
    """The released settings of ``spec``'s benchmark entry with ``items`` (``key=value``) applied, validated."""
    base = spec.benchmark.released()
    if items:
        try:
            merged = OmegaConf.merge(OmegaConf.structured(base), OmegaConf.from_dotlist(list(items)))
            base = OmegaConf.to_object(merged)
        except OmegaConfBaseException as e:
            raise ConfigError(f"--set {' '.join(items)} ({spec.name}): {str(e).splitlines()[0]}") from None
    try:
        return base.validate() if hasattr(base, "validate") else base
    except ConfigError as e:
        raise ConfigError(f"{spec.name} settings{' with --set ' + ' '.join(items) if items else ''}: {e}") from None
