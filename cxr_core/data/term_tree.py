"""PadChest term tree: parse the indented hierarchy and map specific labels to general ones."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..base.errors import DataError

log = logging.getLogger(__name__)

#: Top-level categories whose direct children are the "general" findings.
GROUPING_ROOTS = ("radiological finding", "differential diagnosis")
#: The branch that holds anatomical locations, not findings.
IGNORED_ROOTS = ("localization",)

_LABEL_LINE = re.compile(r"^(?P<indent>\s*)(?P<dash>-\s+)?label:\s*(?P<name>.+?)\s*$")


def normalise_label(text: str) -> str:
    """Canonical key of a label: surrounding whitespace removed, lower case, inner spaces folded."""
    return " ".join(str(text).split()).lower()


@dataclass
class TermTree:
    """Parent links of every label in the tree, keyed by normalised label."""

    parents: dict[str, set[str]] = field(default_factory=dict)
    display: dict[str, str] = field(default_factory=dict)
    roots: list[str] = field(default_factory=list)

    def __contains__(self, label: str) -> bool:
        return normalise_label(label) in self.parents

    def ancestors_paths(self, label: str) -> list[list[str]]:
        """Every path from a root down to `label` (root first)."""
        key = normalise_label(label)
        if key not in self.parents:
            return []
        if not self.parents[key]:
            return [[key]]
        paths = []
        for parent in sorted(self.parents[key]):
            for path in self.ancestors_paths(parent):
                paths.append(path + [key])
        return paths

    def general_labels(self, label: str) -> list[str]:
        """General label(s) of `label`: its ancestor(s) directly below a grouping root.

        Top-level findings (e.g. 'normal') and labels absent from the tree map to themselves;
        paths through the localization branch are ignored.
        """
        key = normalise_label(label)
        paths = self.ancestors_paths(key)
        if not paths:
            return [key]
        general: list[str] = []
        for path in paths:
            root = path[0]
            if root in IGNORED_ROOTS:
                continue
            candidate = path[1] if root in GROUPING_ROOTS and len(path) > 1 else path[0]
            if candidate not in general:
                general.append(candidate)
        return general or [key]

    def is_location(self, label: str) -> bool:
        """True when every place the label appears is under the localization branch."""
        paths = self.ancestors_paths(label)
        return bool(paths) and all(path[0] in IGNORED_ROOTS for path in paths)


def parse_term_tree(text: str) -> TermTree:
    """Parse the PadChest `term_tree.txt` format (indented `label:` / `children:` blocks)."""
    tree = TermTree()
    stack: list[tuple[int, str]] = []  # (depth, label) of the current ancestry
    for line_no, raw in enumerate(text.splitlines(), start=1):
        match = _LABEL_LINE.match(raw)
        if not match:
            continue
        indent = len(match["indent"].expandtabs(2))
        depth = 0 if not match["dash"] else indent // 2 + 1
        name = match["name"]
        key = normalise_label(name)
        while stack and stack[-1][0] >= depth:
            stack.pop()
        if depth > 0 and not stack:
            raise DataError(f"Term tree line {line_no} is indented but has no parent label.")
        tree.parents.setdefault(key, set())
        tree.display.setdefault(key, name.strip())
        if stack:
            tree.parents[key].add(stack[-1][1])
        elif key not in tree.roots:
            tree.roots.append(key)
        stack.append((depth, key))
    if not tree.parents:
        raise DataError("The term tree file holds no 'label:' lines.")
    return tree


def load_term_tree(path: str | Path) -> TermTree:
    """Read and parse a term tree file, with a clear error when it is missing or unreadable."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise DataError(f"Term tree file not found: {path}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"Term tree file {path} could not be read: {exc}") from exc
    return parse_term_tree(text)


def finding_terms(tree: TermTree) -> list[str]:
    """Every finding and diagnosis term of the tree (below the grouping roots, not locations),
    as the tree spells them, sorted: what an expert may add to a review."""
    terms = {tree.display[key] for key in tree.parents
             if key not in tree.roots and not tree.is_location(key)
             and any(path[0] in GROUPING_ROOTS for path in tree.ancestors_paths(key))}
    return sorted(terms, key=str.lower)
