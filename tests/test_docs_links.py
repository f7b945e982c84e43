"""README.md and docs/*.md: every relative link and #anchor resolves; README stays a short guide.

Anchors follow GitHub's heading slugs: the heading's text (link targets and formatting dropped),
lower-cased, every character that is not a letter, digit, mark, space, hyphen or underscore
removed, spaces turned into hyphens; a repeated slug gets -1, -2, ... in order.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README_MAX_LINES = 300

FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
INLINE_CODE = re.compile(r"(`+)(.+?)\1")
EXTERNAL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")  # http:, https:, mailto:, ...


def pages() -> list[Path]:
    return [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md"))


def prose_lines(text: str):
    """(line number, line) outside fenced code blocks."""
    fenced = False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            yield number, line


def slug(heading: str) -> str:
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading keeps its text
    text = text.lower()
    kept = "".join(c for c in text
                   if c in " -_" or unicodedata.category(c)[0] in "LNM")
    return kept.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for _, line in prose_lines(path.read_text(encoding="utf-8")):
        m = HEADING.match(line)
        if not m:
            continue
        base = slug(m.group(2))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    for m in re.finditer(r"<a\s+(?:name|id)=\"([^\"]+)\"", path.read_text(encoding="utf-8")):
        out.add(m.group(1))
    return out


def links(path: Path):
    """(line number, target) of every relative link, inline code left out."""
    for number, line in prose_lines(path.read_text(encoding="utf-8")):
        line = INLINE_CODE.sub("", line)
        for m in LINK.finditer(line):
            target = m.group(1)
            if not EXTERNAL.match(target):
                yield number, target


def broken_links(path: Path, root: Path = ROOT) -> list[str]:
    problems = []
    for number, target in links(path):
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        where = f"{path.relative_to(root)}:{number}: {target}"
        if not dest.exists():
            problems.append(f"{where}: no such file {dest.relative_to(root) if dest.is_relative_to(root) else dest}")
            continue
        if anchor:
            if dest.suffix != ".md" or dest.is_dir():
                problems.append(f"{where}: an anchor into a file that is not markdown")
            elif anchor not in anchors(dest):
                problems.append(f"{where}: no heading with anchor #{anchor} in {dest.relative_to(root)}")
    return problems


def test_slug_follows_github():
    assert slug("Evaluate on BEIR") == "evaluate-on-beir"
    assert slug("The demo: zero-shot -> fine-tuned on SciFact") == "the-demo-zero-shot---fine-tuned-on-scifact"
    assert slug("The l0 paper's grid: `bash scripts/run_reproduce.sh`") == \
        "the-l0-papers-grid-bash-scriptsrun_reproducesh"
    assert slug("1. The collapse") == "1-the-collapse"
    assert slug("BM25 (`sparse/retrieval/bm25.py`)") == "bm25-sparseretrievalbm25py"


def test_duplicate_headings_get_numbered(tmp_path):
    page = tmp_path / "p.md"
    page.write_text("# A\n## Notes\n```\n# not a heading\n```\n## Notes\n", encoding="utf-8")
    assert anchors(page) == {"a", "notes", "notes-1"}


def test_a_broken_link_is_reported(tmp_path):
    (tmp_path / "other.md").write_text("# Here\n", encoding="utf-8")
    page = tmp_path / "p.md"
    page.write_text("[ok](other.md#here) [gone](missing.md) [bad](other.md#there) `[code](x.md)`\n"
                    "[web](https://example.org) [self](#top)\n# Top\n", encoding="utf-8")
    problems = broken_links(page, root=tmp_path)
    assert len(problems) == 2, problems
    assert "missing.md" in problems[0] and "#there" in problems[1]


def test_docs_pages_exist():
    names = {p.name for p in (ROOT / "docs").glob("*.md")}
    for name in ("README.md", "configuration.md", "engines.md", "benchmarks.md", "failure-modes.md",
                 "compatibility.md", "data.md", "export.md", "model.md", "reproduce.md", "training.md"):
        assert name in names, f"docs/{name} is missing"


@pytest.mark.parametrize("page", pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    problems = broken_links(page)
    assert not problems, "broken links:\n" + "\n".join(problems)


def test_docs_index_lists_every_page():
    index = (ROOT / "docs" / "README.md").read_text(encoding="utf-8")
    listed = {target for _, target in links(ROOT / "docs" / "README.md")}
    for page in (ROOT / "docs").glob("*.md"):
        if page.name != "README.md":
            assert page.name in listed, f"docs/README.md does not list {page.name}"
    assert index


def test_readme_is_a_short_guide():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines (at most {README_MAX_LINES})"
