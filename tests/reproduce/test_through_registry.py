"""Reproduction and analysis reach a method only through the registry: no module of theirs imports a method package
or names a method (a string equal to a method's name, an identifier containing one); what a method brings
(``MethodSpec.paper``, ``analyses``, ``ablations``) is what they run."""
import ast
import pathlib

import pytest

from varformer.methods import registry

PACKAGE = pathlib.Path(__file__).resolve().parents[2] / "varformer"
GENERIC = sorted([*PACKAGE.joinpath("reproduce").glob("*.py"), PACKAGE / "commands" / "reproduce.py",
                  PACKAGE / "commands" / "analyze.py", PACKAGE / "methods" / "figures.py"])


def _names_a_method(path: pathlib.Path):
    names = set(registry.names())
    packages = {spec.package for spec in registry.methods().values() if spec.package}
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(tuple(packages)):
            yield f"line {node.lineno}: imports {node.module}"
        if isinstance(node, ast.Import):
            yield from (f"line {node.lineno}: imports {a.name}" for a in node.names
                        if a.name.startswith(tuple(packages)))
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.lower() in names:
            yield f"line {node.lineno}: the string {node.value!r}"
        ident = (node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else
                 node.name if isinstance(node, (ast.FunctionDef, ast.ClassDef)) else
                 node.arg if isinstance(node, ast.arg) else None)
        if ident and any(n in ident.lower() for n in names):
            yield f"line {node.lineno}: the identifier {ident}"


@pytest.mark.parametrize("path", GENERIC, ids=[str(p.relative_to(PACKAGE)) for p in GENERIC])
def test_generic_module_names_no_method(path):
    found = list(_names_a_method(path))
    assert not found, f"{path.relative_to(PACKAGE.parent)} names a method: " + "; ".join(found)


def test_the_default_method_brings_its_reproduction():
    spec = registry.get(registry.DEFAULT)
    assert spec.paper is not None and spec.paper.source in {f.filename for f in spec.paper.files}
    assert [a.name for a in spec.analyses] == ["alignment", "scale-replacement", "dae-weights"]
    assert spec.ablations is not None and spec.ablations.stage in spec.stage_names()
    assert spec.ablations.first_stage[0] in spec.stage_names()
    for name in registry.names():     # the others say they have none, in one line (they come later)
        other = registry.get(name)
        if other.paper is None:
            from varformer.errors import ConfigError
            from varformer.reproduce.paper import paper_spec
            with pytest.raises(ConfigError, match="no paper reproduction here yet"):
                paper_spec(name)
