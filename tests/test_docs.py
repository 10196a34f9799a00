"""The docs against the tree: docs/architecture.md's package map names every module of varformer/ and nothing
that is gone, its layer table is tests/test_layers.py's, its table of environment variables names every variable
the package reads, and every source file a doc names exists. Read with ``ast`` and plain text: nothing is
imported."""
import ast
import pathlib
import re
from typing import Dict, List, Set

from test_layers import LAYERS

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "varformer"
ARCHITECTURE = (ROOT / "docs" / "architecture.md").read_text()


def _section(title: str) -> str:
    head = f"\n## {title}\n"
    assert head in ARCHITECTURE, f"docs/architecture.md has no section '{title}'"
    return ARCHITECTURE.split(head, 1)[1].split("\n## ", 1)[0]


def _table_rows(section: str) -> List[List[str]]:
    """The body rows of the markdown table in ``section``, split into cells (header and rule left out)."""
    rows = [line for line in section.splitlines() if line.startswith("|")]
    return [[c.strip() for c in line.strip("|").split(" | ")] for line in rows[2:]]


# ---------------------------------------------------------------------------------------------------------------
# The package map
# ---------------------------------------------------------------------------------------------------------------
MODULES: Set[str] = {str(p.relative_to(PACKAGE).with_suffix("")).replace("\\", "/")
                     for p in PACKAGE.rglob("*.py") if p.name != "__init__.py"}   # a package is its modules


def map_names(section: str) -> List[str]:
    """The module names of the map's first column: ``model/dae``, ``aft`` -> model/dae, model/aft (a bare name is
    in the folder of the name before it in the cell); ``commands/*`` stands for every module of that folder."""
    names = []
    for cells in _table_rows(section):
        folder = ""
        for name in re.findall(r"`([^`]+)`", cells[0]):
            if "/" in name:
                folder = name.rsplit("/", 1)[0] + "/"
            else:
                name = folder + name
            names.append(name)
    return names


def _covers(name: str) -> Set[str]:
    if name.endswith("/*"):
        return {m for m in MODULES if m.startswith(name[:-1])}
    return {name} & MODULES


def test_the_package_map_names_every_module_and_only_modules_that_exist():
    names = map_names(_section("Package map"))
    gone = [n for n in names if not _covers(n)]
    assert not gone, f"docs/architecture.md's package map names modules that do not exist: {gone}"
    covered = set().union(*map(_covers, names))
    missing = sorted(MODULES - covered)
    assert not missing, f"modules missing from docs/architecture.md's package map (add a row): {missing}"


def test_map_names_reads_groups_and_globs():
    section = "| module | owns |\n|---|---|\n| `errors` | a |\n| `model/dae`, `aft`, `data/roots`, `check` | b |\n"
    assert map_names(section) == ["errors", "model/dae", "model/aft", "data/roots", "data/check"]
    assert _covers("commands/*") >= {"commands/train", "commands/evaluate"} and not _covers("model/strict_load")


def test_the_layer_table_is_the_layer_test_s():
    rows = _table_rows(_section("Layers"))
    table = [tuple(re.findall(r"`([^`]+)`", cells[1])) for cells in rows]
    assert [int(cells[0]) for cells in rows] == list(range(len(rows)))
    assert table == [tuple(g) for g in LAYERS], ("docs/architecture.md's layer table differs from LAYERS in "
                                                 f"tests/test_layers.py:\n{table}\n{LAYERS}")


# ---------------------------------------------------------------------------------------------------------------
# Environment variables
# ---------------------------------------------------------------------------------------------------------------
def _is_environ(node: ast.AST) -> bool:
    return isinstance(node, ast.Attribute) and node.attr == "environ" and isinstance(node.value, ast.Name) \
        and node.value.id == "os"


def environment_reads(source: str) -> Dict[str, List[int]]:
    """Variable name -> lines where ``source`` reads it: ``os.environ.get(N)``, ``os.environ[N]``, ``os.getenv(N)``,
    ``N in os.environ``; a read whose name is not a string constant is reported as '?'."""
    found: Dict[str, List[int]] = {}

    def add(key: ast.AST, line: int) -> None:
        name = key.value if isinstance(key, ast.Constant) and isinstance(key.value, str) else "?"
        found.setdefault(name, []).append(line)

    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args:
            f = node.func
            if (f.attr in ("get", "setdefault", "pop") and _is_environ(f.value)) or \
                    (f.attr == "getenv" and isinstance(f.value, ast.Name) and f.value.id == "os"):
                add(node.args[0], node.lineno)
        elif isinstance(node, ast.Subscript) and _is_environ(node.value) and isinstance(node.ctx, ast.Load):
            add(node.slice, node.lineno)
        elif isinstance(node, ast.Compare) and any(_is_environ(c) for c in node.comparators) \
                and isinstance(node.ops[0], (ast.In, ast.NotIn)):
            add(node.left, node.lineno)
    return found


def test_environment_reads_are_found():
    src = ("import os\na = os.environ.get('A', '1')\nb = os.environ['B']\nc = os.getenv('C')\nd = 'D' in os.environ\n"
           "e = os.environ.get(name)\nos.environ['W'] = '1'\n")
    assert environment_reads(src) == {"A": [2], "B": [3], "C": [4], "D": [5], "?": [6]}


def test_every_environment_variable_the_package_reads_is_in_the_docs_table():
    read: Dict[str, List[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        for name, lines in environment_reads(path.read_text()).items():
            read.setdefault(name, []).extend(f"{path.relative_to(ROOT)}:{n}" for n in lines)
    assert "?" not in read, f"environment reads by a computed name (name them in the code): {read['?']}"
    assert {n for n in read if n.startswith("VARFORMER_")} >= {"VARFORMER_CPU_LINEAR", "VARFORMER_MALLOC",
                                                              "VARFORMER_CACHE", "VARFORMER_CHECKPOINTS",
                                                              "VARFORMER_DEMO_CACHE"}
    documented = {n for cells in _table_rows(_section("Environment variables"))
                  for n in re.findall(r"`([A-Z][A-Z0-9_]*)`", cells[0])}
    undocumented = {n: where for n, where in read.items() if n not in documented}
    assert not undocumented, ("environment variables read but not in docs/architecture.md's table "
                              f"('Environment variables'): {undocumented}")
    assert not documented - set(read), f"the table names variables nothing reads: {sorted(documented - set(read))}"


# ---------------------------------------------------------------------------------------------------------------
# Source paths the docs name
# ---------------------------------------------------------------------------------------------------------------
def test_every_source_file_the_docs_name_exists():
    docs = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    gone = sorted({f"{doc.relative_to(ROOT)}: {path}" for doc in docs
                   for path in re.findall(r"\bvarformer/[\w/]+\.py\b", doc.read_text()) if not (ROOT / path).is_file()})
    assert not gone, "the docs name source files that do not exist:\n" + "\n".join(gone)
