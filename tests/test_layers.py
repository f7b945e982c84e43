"""The import graph of ``sparse/`` has floors and no circles.

Floors: no package imports one above or beside it. A package is a first-level name under
``sparse`` (``sparse.corpus.cache`` -> ``corpus``; ``sparse/errors.py`` -> ``errors``).

Circles: no module imports, directly or through others, a module that imports it back, inside one
package or across packages. The nodes are modules (a package's ``__init__`` is the module named
after the package); ``from sparse.corpus import distributed`` is an edge to the module
``sparse.corpus.distributed`` when that is a module, else to ``sparse.corpus`` itself. The implicit
import of a parent package that Python performs before a submodule is not an edge: it is how every
package works, not a dependency a maintainer wrote.

In both checks every ``import`` / ``from ... import`` of every ``.py`` file under ``sparse/``
counts, the ones inside functions too: a lazy import is still a dependency, and a circle closed
by a lazy import is still a circle (two modules that need each other are one job in two files).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

SPARSE = Path(__file__).resolve().parent.parent / "sparse"

# package -> the packages it may import (besides itself), lowest floor first
ALLOWED = {
    "errors": set(),
    "paths": set(),  # the checkout's root
    "modeling": {"errors"},
    "losses": {"errors"},
    "data": {"errors"},
    "assets": {"errors", "config", "paths"},  # the ``python -m sparse.assets`` command line
    "retrieval": {"errors", "modeling", "data"},  # data: the corpus hash of cache keys
    # config names the registries of the modules that implement a choice as "module:NAME" strings
    "config": {"errors", "paths"},
    "idf": {"errors", "config", "modeling", "data"},  # the ``python -m sparse.idf`` command line
    "corpus": {"errors", "config", "modeling", "retrieval", "data"},
    # the bm25 teacher scores with retrieval's BM25 over a collection (data) cached like corpus vectors
    "teachers": {"errors", "modeling", "retrieval", "data", "corpus"},
    # the top floor: beside each other, never importing each other
    "evaluation": {"errors", "config", "corpus", "modeling", "retrieval", "data", "assets"},
    "datagen": {"errors", "config", "corpus", "modeling", "retrieval", "data", "teachers", "assets"},
    "training": {"errors", "config", "corpus", "modeling", "losses", "data", "teachers"},
    "export": {"errors", "config", "corpus", "modeling", "retrieval", "data"},
    # the reproduction grid drives the entry points and reads their reports
    "reproduce": {"errors", "paths", "config", "assets", "evaluation", "data"},
    # the ``sparse`` console script: every command by name (imported when chosen), data generation's commands
    "commands": {"errors", "config", "datagen"},
    # adaptation drives the entry points like the demo, and makes its pseudo-queries in process
    "adapt": {"errors", "paths", "config", "assets", "data", "datagen", "evaluation", "reproduce"},
}


def _imported_modules(path: Path, submodules: bool = False) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in ``path``, relative imports resolved;
    ``submodules``: ``from package import name`` also yields ``package.name`` (a module or not)."""
    rel = path.relative_to(SPARSE.parent).with_suffix("")
    package = list(rel.parts[:-1])  # the package holding the file (also for __init__.py)
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            if module == "sparse":  # from sparse import assets: the names are modules
                out += [(node.lineno, f"sparse.{a.name}") for a in node.names]
            elif submodules:
                out += [(node.lineno, f"{module}.{a.name}") for a in node.names]
            else:
                out.append((node.lineno, module))
    return out


def package_edges() -> dict[tuple[str, str], list[str]]:
    """(from package, to package) -> the places ("file:line") where the edge is made."""
    edges: dict[tuple[str, str], list[str]] = {}
    for path in sorted(SPARSE.rglob("*.py")):
        source = path.relative_to(SPARSE).with_suffix("").parts[0]
        for line, module in _imported_modules(path):
            parts = module.split(".")
            if parts[0] != "sparse" or len(parts) < 2 or parts[1] == source:
                continue
            edges.setdefault((source, parts[1]), []).append(f"{path.relative_to(SPARSE.parent)}:{line}")
    return edges


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SPARSE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def module_edges() -> dict[str, dict[str, int]]:
    """module -> {module of ``sparse`` it imports: the first line that imports it}."""
    paths = sorted(SPARSE.rglob("*.py"))
    modules = {_module_name(p) for p in paths}
    edges: dict[str, dict[str, int]] = {}
    for path in paths:
        source = _module_name(path)
        out = edges.setdefault(source, {})
        for line, module in _imported_modules(path, submodules=True):
            target = module if module in modules else module.rpartition(".")[0]
            while target and target not in modules:  # ``import sparse.x.y.name`` of a name
                target = target.rpartition(".")[0]
            if target.startswith("sparse") and target != source:
                out.setdefault(target, line)
    return edges


def import_circles(edges: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                circles.append(sorted(group))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return sorted(circles)


def test_no_import_circles():
    edges = module_edges()
    circles = import_circles(edges)
    lines = [" <-> ".join(group) + ": " + ", ".join(f"{a} imports {b} (line {edges[a][b]})" for a in group
                                                      for b in group if b in edges[a])
             for group in circles]
    assert not circles, "import circles:\n" + "\n".join(lines)


def test_the_circle_check_sees_lazy_imports_and_submodules(tmp_path, monkeypatch):
    pkg = tmp_path / "sparse" / "datagen"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "args.py").write_text("def check():\n    from sparse.datagen.candidates import parse\n")
    (pkg / "candidates.py").write_text("from sparse.datagen import args\n")
    (pkg / "kd.py").write_text("from . import args\nfrom sparse.datagen import stats\n")
    (pkg / "stats.py").write_text("")
    monkeypatch.setattr(sys.modules[__name__], "SPARSE", tmp_path / "sparse")
    assert import_circles(module_edges()) == [["sparse.datagen.args", "sparse.datagen.candidates"]]


def test_every_package_has_a_floor():
    packages = {p.relative_to(SPARSE).with_suffix("").parts[0] for p in SPARSE.rglob("*.py")} - {"__init__"}
    unknown = sorted(packages - set(ALLOWED))
    assert not unknown, f"packages {unknown} are not in ALLOWED of tests/test_layers.py: give them a floor"


def test_the_allowed_table_has_floors():
    """No cycle in ALLOWED: every package can be placed on a floor above everything it imports."""
    placed: list[str] = []
    left = dict(ALLOWED)
    while left:
        ready = [p for p, deps in left.items() if deps <= set(placed)]
        assert ready, f"ALLOWED has a cycle among {sorted(left)}"
        placed += sorted(ready)
        for p in ready:
            del left[p]


def test_no_upward_or_sideways_imports():
    forbidden = {edge: where for edge, where in package_edges().items() if edge[1] not in ALLOWED.get(edge[0], set())}
    lines = [f"{src} -> {dst} (allowed: {sorted(ALLOWED.get(src, ()))}) at {', '.join(where[:3])}"
             for (src, dst), where in sorted(forbidden.items())]
    assert not forbidden, "forbidden imports:\n" + "\n".join(lines)


def test_the_checker_sees_lazy_and_relative_imports(tmp_path, monkeypatch):
    pkg = tmp_path / "sparse" / "modeling"
    pkg.mkdir(parents=True)
    (pkg / "x.py").write_text("def f():\n    from sparse.evaluation import runner\n\nfrom ..training import run\n")
    monkeypatch.setattr(sys.modules[__name__], "SPARSE", tmp_path / "sparse")
    edges = package_edges()
    assert set(edges) == {("modeling", "evaluation"), ("modeling", "training")}
