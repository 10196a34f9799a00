"""No module outside a method's own package names a method (docs/extending.md): generic code reaches a method
through the registry (``varformer.methods.registry``), so a new method is a new package plus one registry entry.

Read with ``ast``, per module of ``varformer/``, for every built-in method (its ``MethodSpec.name`` and
``package``):
(a) an import of the method's package;
(b) a string constant (docstrings aside) equal to the method's name or holding it as a word; the default method's
    name ``varformer`` is also the package's and the program's, so for it only the exact string and the CamelCase
    word ``VarFormer`` count, and the exact string not where it names the program, the package or a folder (see
    ``PROJECT_NAME_ROLE``);
(c) an identifier (function, class, variable, parameter, attribute, keyword) holding the method's name
    (case-insensitive; ``VarFormer`` in CamelCase for the default method).
Allowed: the method's own package and ``ALLOWED`` (the registry, the evaluation protocols and published tables,
the dataset catalogue).
"""
import ast
import pathlib
import re
from typing import Dict, List

import pytest

from varformer.cli import SUBCOMMANDS
from varformer.methods import registry

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "varformer"
METHODS: Dict[str, str] = {spec.name: spec.package for spec in registry.BUILT_IN}   # name -> its package

ALLOWED = {
    "varformer.methods.registry": "the registry: the one module that lists the built-in methods",
    "varformer.evaluation.protocols": "evaluation protocols are named after the paper whose code they follow",
    "varformer.data.catalog": "the dataset catalogue (benchmarks named by their papers)",
}

# modules that still name a method on main; each entry must still fail (test_pending_modules_still_name_a_method)

# "varformer" as the program, the package or a folder, not the method: the role of the string (see _role)
PROJECT_NAME_ROLE = re.compile(r"^(prog|join|Path|files|import_module|/|command line)$|reader|generator", re.I)


def _module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _word(name: str) -> "re.Pattern":
    if name == registry.DEFAULT:
        return re.compile(r"(?<![A-Za-z0-9_])VarFormer")
    return re.compile(rf"(?<![A-Za-z0-9]){re.escape(name)}(?![A-Za-z0-9])", re.I)


def _in_identifier(name: str) -> "re.Pattern":
    return re.compile("VarFormer") if name == registry.DEFAULT else re.compile(re.escape(name), re.I)


def _docstrings(tree: ast.AST) -> set:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
                    and isinstance(first.value.value, str):
                found.add(id(first.value))
    return found


def _names_of(node: ast.AST) -> List[str]:
    return [n.id if isinstance(n, ast.Name) else n.attr for n in ast.walk(node)
            if isinstance(n, (ast.Name, ast.Attribute))]


def _role(node: ast.AST, parents: Dict[int, ast.AST]) -> str:
    """What a string constant is given to: a keyword's or parameter's name, the called function, the names it is
    compared with or assigned to, '/' (a path), 'command line' (the head of ["varformer", SUBCOMMAND, ...])."""
    child, p = node, parents.get(id(node))
    while isinstance(p, (ast.Tuple, ast.List, ast.Set)):
        elts = p.elts
        if child is elts[0] and len(elts) > 1 and isinstance(elts[1], ast.Constant) and elts[1].value in SUBCOMMANDS:
            return "command line"
        child, p = p, parents.get(id(p))
    if isinstance(p, ast.keyword):
        return p.arg or ""
    if isinstance(p, ast.Call):
        return _names_of(p.func)[0] if child is not p.func else ""
    if isinstance(p, ast.BinOp) and isinstance(p.op, ast.Div):
        return "/"
    if isinstance(p, ast.Compare):
        return " ".join(n for side in [p.left, *p.comparators] if side is not child for n in _names_of(side))
    if isinstance(p, (ast.Assign, ast.AnnAssign)):
        return " ".join(n for t in (p.targets if isinstance(p, ast.Assign) else [p.target]) for n in _names_of(t))
    if isinstance(p, ast.arguments):  # a parameter's default
        positional = p.posonlyargs + p.args
        for arg, default in [*zip(positional[len(positional) - len(p.defaults):], p.defaults),
                             *zip(p.kwonlyargs, p.kw_defaults)]:
            if default is child:
                return arg.arg
    return ""


def _identifiers(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            yield node.lineno, node.name
        elif isinstance(node, ast.Name):
            yield node.lineno, node.id
        elif isinstance(node, ast.Attribute):
            yield node.lineno, node.attr
        elif isinstance(node, ast.arg):
            yield node.lineno, node.arg
        elif isinstance(node, ast.keyword) and node.arg:
            yield node.value.lineno, node.arg
        elif isinstance(node, ast.alias):
            yield getattr(node, "lineno", 0), node.asname or node.name.split(".")[-1]


def _imported(node: ast.AST, package: str) -> List[str]:
    """The modules of ``package`` an import statement names (``from varformer import restorevar`` names
    ``varformer.restorevar``)."""
    inside = lambda name: name == package or name.startswith(package + ".")  # noqa: E731
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if inside(a.name)]
    if isinstance(node, ast.ImportFrom) and node.module and not node.level:
        if inside(node.module):
            return [node.module]
        return [f"{node.module}.{a.name}" for a in node.names if inside(f"{node.module}.{a.name}")]
    return []


def method_names_in(module: str, source: str, methods: Dict[str, str] = METHODS) -> List[str]:
    """Where ``module`` (its ``source``) names a method of ``methods`` that is not its own: 'LINE: what'."""
    tree = ast.parse(source)
    docs = _docstrings(tree)
    parents = {id(c): n for n in ast.walk(tree) for c in ast.iter_child_nodes(n)}
    found = []
    for name, package in methods.items():
        if module == package or module.startswith(package + ".") or module in ALLOWED:
            continue
        found += [f"{node.lineno}: imports {target} ({name}'s package)" for node in ast.walk(tree)
                  for target in _imported(node, package)]
        word = _word(name)
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Constant) and isinstance(node.value, str)) or id(node) in docs:
                continue
            exact = node.value == name and not (name == registry.DEFAULT
                                                and PROJECT_NAME_ROLE.search(_role(node, parents)))
            if exact or word.search(node.value):
                found.append(f"{node.lineno}: string {node.value[:70]!r}")
        pattern = _in_identifier(name)
        found += [f"{line}: identifier {ident}" for line, ident in _identifiers(tree) if pattern.search(ident)]
    return sorted(set(found), key=lambda s: int(s.split(":")[0]))


def _violations(module: str) -> List[str]:
    return method_names_in(module, MODULES[module].read_text())


def test_the_method_packages_are_the_registrys():
    assert METHODS and all(pkg.startswith("varformer.") for pkg in METHODS.values()), METHODS
    for pkg in METHODS.values():
        assert pkg in MODULES, f"a built-in spec's package {pkg} is not a package of varformer/"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_names_a_method_outside_its_package(module):
    found = _violations(module)
    assert not found, (f"{MODULES[module].relative_to(PACKAGE.parent)} names a method outside its package (go "
                       "through varformer.methods.registry and the method's MethodSpec):\n" + "\n".join(found))


def test_the_rules_catch_each_kind_of_naming():
    """Each rule on a small source: what counts, and the project-name uses of 'varformer' that do not."""
    methods = {"varformer": "varformer.model", "restorevar": "varformer.restorevar"}
    src = '''
"""RestoreVAR and VarFormer in a docstring are prose."""
from varformer.model import build
import varformer.restorevar.files
from varformer import restorevar as rv
CHOICES = ["varformer", "restorevar"]
HELP = "a RestoreVAR checkpoint"
TITLE = "the VarFormer model"
RECIPE = "demo_restorevar_stage1.yaml"
def load_restorevar(path, method="varformer"):
    return VarFormerSettings, path.is_restorevar
def fine(base, reader="varformer"):
    p = argparse.ArgumentParser(prog="varformer")
    cmd = ["varformer", "train", "stage1"]
    return os.path.join(base, "varformer"), resources.files("varformer"), reader in ("varformer", "pil"), cmd
'''
    found = method_names_in("varformer.somewhere", src, methods)
    text = "\n".join(found)
    for expected in ("3: imports varformer.model", "4: imports varformer.restorevar.files",
                     "5: imports varformer.restorevar", "6: string 'varformer'", "6: string 'restorevar'",
                     "7: string 'a RestoreVAR checkpoint'", "8: string 'the VarFormer model'",
                     "9: string 'demo_restorevar_stage1.yaml'", "10: identifier load_restorevar",
                     "10: string 'varformer'", "11: identifier VarFormerSettings", "11: identifier is_restorevar"):
        assert expected in text, f"{expected!r} not found in:\n{text}"
    assert not [f for f in found if f.split(":")[0] in {"2", "12", "13", "14", "15"}], text
    assert method_names_in("varformer.restorevar.files", "NAME = 'restorevar'\n", methods) == []
