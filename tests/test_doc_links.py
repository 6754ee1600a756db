"""Links between the repository's documents resolve: every relative Markdown link in README.md,
BENCHMARKS.md and docs/ names a file that exists (and a heading in it, for `#anchor` links), and every
docs/notes link in the code names a file and heading there."""

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", ROOT / "BENCHMARKS.md", *sorted((ROOT / "docs").rglob("*.md"))]


def anchors(path: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation other than hyphens dropped, spaces to hyphens."""
    return {re.sub(r"[^\w\- ]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
            for line in path.read_text().splitlines() if line.startswith("#")}


def check(target: str, base: Path) -> str | None:
    file, _, anchor = target.partition("#")
    path = (base / file).resolve() if file else base
    if not path.exists():
        return f"{target}: no such file"
    if anchor and path.is_file() and anchor not in anchors(path):
        return f"{target}: no heading #{anchor} in {path.relative_to(ROOT)}"
    return None


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: str(path.relative_to(ROOT)))
def test_markdown_links_resolve(document):
    targets = re.findall(r"\]\(([^)\s]+)\)", document.read_text())
    problems = [check(t, document.parent) if not t.startswith("#") else check(document.name + t, document.parent)
                for t in targets if not re.match(r"[a-z]+:", t)]
    assert [p for p in problems if p] == []


def test_docs_links_in_the_code_resolve():
    found = subprocess.run(["git", "grep", "-h", "-o", r"docs/notes/[A-Za-z0-9_./-]*\(#[a-z0-9-]*\)\?", "--", "*.py"],
                           capture_output=True, text=True, cwd=ROOT).stdout.split()
    assert found, "expected docs/notes links in the guidance configs"
    assert [problem for target in found if (problem := check(target, ROOT))] == []
