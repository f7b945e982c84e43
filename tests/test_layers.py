"""The import graph of ``sparse/`` has floors: no package imports one above or beside it.

Every ``import`` / ``from ... import`` of every ``.py`` file under ``sparse/`` counts, the ones
inside functions too (a lazy import is still a dependency). A package is a first-level name under
``sparse`` (``sparse.corpus.cache`` -> ``corpus``; ``sparse/config.py`` -> ``config``).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

SPARSE = Path(__file__).resolve().parent.parent / "sparse"

# package -> the packages it may import (besides itself), lowest floor first
ALLOWED = {
    "errors": set(),
    "modeling": {"errors"},
    "losses": {"errors"},
    "data": {"errors"},
    "assets": {"errors", "config"},  # the ``python -m sparse.assets`` command line
    "retrieval": {"errors", "modeling", "data"},  # data: the corpus hash of cache keys
    # config names the registries of the modules that implement a choice as "module:NAME" strings
    "config": {"errors"},
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
    "reproduce": {"errors", "config", "assets", "evaluation", "data"},
}


def _imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in ``path``, relative imports resolved."""
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
