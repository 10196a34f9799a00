"""The package's import structure (docs/architecture.md): layers import only downwards, no module-level cycles,
every function-local import saying why (start-up time or an optional dependency) on its own line or the line above
it, no file over ~500 lines.

Read from the source with ``ast``: nothing is imported, so a violation is reported even in a module that would
fail to import."""
import ast
import pathlib
from typing import Dict, List, Set, Tuple

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "varformer"

# lowest first: a group may import its own modules and any group of a lower layer, nothing else
LAYERS: List[Tuple[str, ...]] = [
    ("errors",),
    ("runtime", "ops", "files"),
    ("data", "metrics"),
    ("backbone",),
    ("methods", "checkpoints"),             # what a method provides (methods.api) and the pieces methods share
    ("model", "restorevar", "varestorer"),  # the method packages (VarFormer's is ``model``)
    ("methods.registry",),                  # the methods there are: the only module that imports them all
    ("config", "inference"),
    ("training", "evaluation", "restore"),
    ("perf", "demo", "reproduce"),
    ("commands",),
    ("cli", "__init__"),
    ("__main__",),
]
LAYER_OF: Dict[str, int] = {g: i for i, groups in enumerate(LAYERS) for g in groups}
LOCAL_IMPORT_REASONS = ("start-up", "startup", "optional")
MAX_LINES = 520


def _modules() -> Dict[str, pathlib.Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


MODULES = _modules()


def _group(module: str) -> str:
    parts = module.split(".")
    if parts[1:3] == ["methods", "registry"]:
        return "methods.registry"
    return "__init__" if len(parts) == 1 else parts[1]


def _targets(node: ast.AST, module: str) -> List[str]:
    """The varformer modules an import statement names (``from pkg import sub`` names ``pkg.sub`` when ``sub`` is
    a module)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] == "varformer"]
    if isinstance(node, ast.ImportFrom):
        if node.level:  # relative imports are not used in this package
            base = module.rsplit(".", node.level)[0]
            name = f"{base}.{node.module}" if node.module else base
        else:
            name = node.module or ""
        if name.split(".")[0] != "varformer":
            return []
        subs = [f"{name}.{a.name}" for a in node.names if f"{name}.{a.name}" in MODULES]
        return subs + ([name] if len(subs) < len(node.names) else [])
    return []


def _imports(module: str) -> List[Tuple[ast.AST, bool]]:
    """(import node, is module-level) for every import statement of a module."""
    tree = ast.parse(MODULES[module].read_text())
    top = set(map(id, tree.body))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append((node, id(node) in top))
    return found


def test_every_group_has_a_layer():
    unknown = sorted({_group(m) for m in MODULES} - set(LAYER_OF))
    assert not unknown, f"modules outside the layer map (add them to LAYERS and docs/architecture.md): {unknown}"


def test_imports_only_go_downwards():
    bad = []
    for module in MODULES:
        g = _group(module)
        for node, _ in _imports(module):
            for target in _targets(node, module):
                tg = _group(target)
                if tg != g and LAYER_OF.get(tg, -1) >= LAYER_OF[g]:
                    bad.append(f"{module} (layer {LAYER_OF[g]}) imports {target} (layer {LAYER_OF.get(tg)})")
    assert not bad, "imports against the layers:\n" + "\n".join(bad)


def test_no_module_level_cycles():
    graph: Dict[str, Set[str]] = {m: set() for m in MODULES}
    for module in MODULES:
        for node, top_level in _imports(module):
            if top_level:
                graph[module] |= {t for t in _targets(node, module) if t in MODULES and t != module}
    index, low, on_stack, stack, cycles = {}, {}, set(), [], []

    def visit(v, counter=[0]):  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    assert not cycles, f"module-level import cycles: {cycles}"


def _comment(line: str) -> str:
    """The ``#`` comment of a source line, lower-cased ('' if none)."""
    return line.split("#", 1)[1].lower() if "#" in line else ""


def local_imports_without_reason(source: str) -> List[int]:
    """Lines of the function-local import statements of ``source`` that do not say why they are local: each needs
    its own comment naming the reason on one of its lines or on the line directly above it."""
    lines = source.splitlines()
    bad = []
    for func in ast.walk(ast.parse(source)):
        if isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(func):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    own = [_comment(lines[i - 1]) for i in range(max(node.lineno - 1, 1), node.end_lineno + 1)]
                    if not any(r in c for c in own for r in LOCAL_IMPORT_REASONS):
                        bad.append(node.lineno)
    return sorted(set(bad))


def test_function_local_imports_say_why():
    bad = []
    for path in MODULES.values():
        lines = path.read_text().splitlines()
        bad += [f"{path.relative_to(PACKAGE.parent)}:{n}: {lines[n - 1].strip()}"
                for n in local_imports_without_reason(path.read_text())]
    assert not bad, ("function-local imports without their own reason (a comment on the import's line or the "
                     "line above it saying 'start-up' or 'optional'):\n" + "\n".join(bad))


def test_the_local_import_rule_is_per_import():
    source = """
def run():
    # start-up: torch only when the command runs
    import torch
    import numpy
    from a import (b,
                   c)  # optional dependency
    x = 1
    import json  # start-up
    # the reason is above the other import, not this one

    import os
    return torch, numpy, b, c, x, json, os
"""
    assert local_imports_without_reason(source) == [5, 12]


@pytest.mark.parametrize("module", sorted(MODULES))
def test_file_length(module):
    n = len(MODULES[module].read_text().splitlines())
    assert n <= MAX_LINES, f"{MODULES[module]} has {n} lines: it holds two concepts, split it"


# One owner per job (docs/architecture.md): the calls that only these modules make. Everything else goes through
# them: ``runtime.autocast`` / ``runtime.fp32_region``, ``files.read_torch_file`` (weights_only, one-line
# errors), ``files.save_torch_atomic`` / ``save_safetensors_atomic`` / ``atomic_output`` (temporary, then rename).
OWNED_CALLS: Dict[str, Tuple[str, ...]] = {
    "torch.autocast": ("varformer.runtime",),
    "torch.load": ("varformer.files",),
    "torch.save": ("varformer.files",),
    "save_file": ("varformer.files",),
    # a whole folder swapped into place (the crops of a report, a rebuilt demo set); files go through files.py
    "os.replace": ("varformer.files", "varformer.evaluation.crops", "varformer.data.demo_set"),
    "os.rename": ("varformer.files",),
}


def owned_calls_outside_owners(source: str, module: str) -> List[Tuple[int, str]]:
    out = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        name = (f.id if isinstance(f, ast.Name) else
                f"{f.value.id}.{f.attr}" if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) else None)
        if name in OWNED_CALLS and module not in OWNED_CALLS[name]:
            out.append((node.lineno, name))
    return sorted(out)


def test_each_job_has_one_owner():
    bad = [f"{path.relative_to(PACKAGE.parent)}:{line}: {name} (owner: {', '.join(OWNED_CALLS[name])})"
           for module, path in MODULES.items() for line, name in owned_calls_outside_owners(path.read_text(), module)]
    assert not bad, "calls outside the module that owns the job:\n" + "\n".join(bad)


def test_the_owner_rule_sees_calls():
    source = "import torch, os\nwith torch.autocast('cpu'):\n    torch.save({}, 'x')\nos.replace('a', 'b')\n"
    assert owned_calls_outside_owners(source, "varformer.model.task") == [(2, "torch.autocast"), (3, "torch.save"),
                                                                          (4, "os.replace")]
    assert owned_calls_outside_owners(source, "varformer.files") == [(2, "torch.autocast")]
