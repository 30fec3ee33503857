"""README stays a short front door and every relative link in README.md and docs/*.md resolves.

A link to a moved or renamed page, or to a heading that no longer exists, fails here instead of
leaving a reader at a dead end."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from urllib.parse import unquote

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DOCS = REPO / "docs"
MAX_README_LINES = 250

_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_FENCE = re.compile(r"^\s*(```|~~~)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def markdown_files() -> list[Path]:
    """README.md and every page under docs/."""
    return [README, *sorted(DOCS.glob("*.md"))]


def _prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks (links and headings inside code are not Markdown)."""
    lines, fenced = [], False
    for line in text.splitlines():
        if _FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(line)
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"`|\*\*|__", "", heading)
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a Markdown file, with GitHub's -1, -2 suffixes for repeats."""
    seen: dict[str, int] = {}
    found = set()
    for line in _prose_lines(path.read_text(encoding="utf-8")):
        match = _HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def relative_links(path: Path) -> list[str]:
    """Link targets in a Markdown file that point inside the repository (no scheme, no mailto)."""
    targets = []
    for line in _prose_lines(path.read_text(encoding="utf-8")):
        for target in _LINK.findall(line):
            if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target):
                continue
            targets.append(target)
    return targets


def broken_links(path: Path) -> list[str]:
    """The relative links of one file whose file or heading does not exist, with the reason."""
    problems = []
    for target in relative_links(path):
        file_part, _, anchor = target.partition("#")
        destination = (path.parent / unquote(file_part)).resolve() if file_part else path
        if not destination.exists():
            problems.append(f"{target}: no file {destination.relative_to(REPO)}")
            continue
        if anchor and destination.suffix == ".md" and anchor not in anchors(destination):
            problems.append(f"{target}: no heading #{anchor} in {destination.relative_to(REPO)}")
    return problems


_CODE_PATH = re.compile(r"`((?:tests|cxr_core|app_pages|ui|scripts|benchmarks)/[\w./-]+?)(?:::\s*(\w+))?`")
_GENERATED = ("benchmarks/results/",)


def missing_code_paths(path: Path) -> list[str]:
    """Repository files and tests named in backticks (`tests/x.py::test_y`) that do not exist.

    Generated outputs (benchmark results) are not in the repository and are not checked."""
    text = re.sub(r"`\s*\n\s*", "` ", path.read_text(encoding="utf-8"))
    text = re.sub(r"::\s*\n\s*", "::", text)
    problems = []
    for rel, test_name in _CODE_PATH.findall(text):
        if rel.startswith(_GENERATED):
            continue
        target = REPO / rel
        if not target.exists():
            problems.append(f"{rel}: no such file")
        elif test_name and f"def {test_name}(" not in target.read_text(encoding="utf-8"):
            problems.append(f"{rel}::{test_name}: no such test")
    return problems


def test_readme_is_a_short_front_door():
    lines = README.read_text(encoding="utf-8").count("\n")
    assert lines <= MAX_README_LINES, (
        f"README.md has {lines} lines (at most {MAX_README_LINES}); move the depth to a docs/ page")


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves(path):
    assert broken_links(path) == []


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_every_named_file_and_test_exists(path):
    assert missing_code_paths(path) == []


def readme_cli_commands() -> set[str]:
    """The subcommands named by the `python -m cxr_core ...` lines of README's CLI section."""
    section = README.read_text(encoding="utf-8").split("\n## CLI", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^python -m cxr_core ([a-z][\w-]*)", section, re.MULTILINE))


def test_readme_has_one_cli_line_per_subcommand():
    import argparse

    from cxr_core.cli import build_parser

    actions = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    commands = set(actions[0].choices)
    missing, unknown = sorted(commands - readme_cli_commands()), sorted(readme_cli_commands() - commands)
    assert (missing, unknown) == ([], []), (
        f"README's CLI section lacks {missing} and names unknown commands {unknown}")


def test_every_docs_page_is_linked_from_readme():
    linked = {(README.parent / t.partition("#")[0]).resolve() for t in relative_links(README)}
    unlinked = [p.name for p in sorted(DOCS.glob("*.md")) if p.resolve() not in linked]
    assert unlinked == [], f"docs pages missing from README's Documentation list: {unlinked}"


def test_the_checker_finds_a_missing_file_and_a_missing_heading(tmp_path, monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    (tmp_path / "page.md").write_text("# Page\n\n## Known heading\n\ntext\n")
    doc = tmp_path / "doc.md"
    doc.write_text("[ok](page.md#known-heading) [self](#top) [gone](missing.md) "
                   "[stale](page.md#old-heading) [web](https://example.org)\n"
                   "```\n[in code](nowhere.md)\n```\n# Top\n")
    assert broken_links(doc) == ["missing.md: no file missing.md",
                                 "page.md#old-heading: no heading #old-heading in page.md"]


def test_the_checker_finds_a_renamed_file_and_test(tmp_path, monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_a.py").write_text("def test_kept():\n    pass\n")
    doc = tmp_path / "doc.md"
    doc.write_text("`tests/test_a.py::test_kept`, `tests/test_a.py::\ntest_gone`, `tests/test_b.py`, "
                   "`benchmarks/results/x.json`\n")
    assert missing_code_paths(doc) == ["tests/test_a.py::test_gone: no such test",
                                       "tests/test_b.py: no such file"]


def test_slug_matches_github_for_the_headings_used_here():
    assert slug("GPU figures (partial, one NVIDIA H100)") == "gpu-figures-partial-one-nvidia-h100"
    assert slug("Maps, engines and start-up") == "maps-engines-and-start-up"
    assert slug("Configuration (environment variables)") == "configuration-environment-variables"
    assert slug("`make test` runs") == "make-test-runs"
