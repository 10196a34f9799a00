"""The benchmarks reach every method through the registry: no module of ``varformer/perf`` nor
``commands/benchmark.py`` imports a method's package, holds a method's name as a string or names an identifier
after one (read with ``ast``: nothing is imported)."""
import ast
import pathlib

import pytest

from varformer.methods import registry

PACKAGE = pathlib.Path(__file__).resolve().parents[2] / "varformer"
FILES = sorted((PACKAGE / "perf").glob("*.py")) + [PACKAGE / "commands" / "benchmark.py"]


def _identifiers(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            yield node.id
        elif isinstance(node, ast.Attribute):
            yield node.attr
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            yield node.name
        elif isinstance(node, ast.arg):
            yield node.arg
        elif isinstance(node, ast.alias):
            yield node.asname or node.name.rsplit(".", 1)[-1]
        elif isinstance(node, ast.keyword) and node.arg:
            yield node.arg


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_no_method_is_named(path):
    specs = list(registry.methods().values())
    names = {s.name.lower() for s in specs}
    packages = {s.package for s in specs if s.package}
    tree = ast.parse(path.read_text())
    imported = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module]
    imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert not [m for m in imported if any(m == p or m.startswith(p + ".") for p in packages)], path
    strings = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)]
    assert not [s for s in strings if s.strip().lower() in names], path
    # names imported from the package's generic modules are theirs (e.g. the package's VarformerError)
    generic = {a.asname or a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
    assert not [i for i in _identifiers(tree) if i not in generic and any(n in i.lower() for n in names)], path
