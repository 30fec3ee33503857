"""The package layout: pipeline stages import only downward, no cycles, no private names shared."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "cxr_core"


def test_import_contracts_hold():
    """`lint-imports` (the contracts in pyproject.toml) passes: a new upward import or cycle fails."""
    result = subprocess.run([str(Path(sys.executable).with_name("lint-imports")), "--config",
                             "pyproject.toml", "--no-cache"], cwd=REPO, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})  # this checkout's code
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "3 kept, 0 broken" in result.stdout


def _imported_names(path: Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            for alias in node.names:
                yield node, alias.name


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(REPO)))
def test_no_private_name_is_imported_across_modules(path):
    """`from x import _name` is refused: a name shared between modules is public."""
    offenders = [f"line {node.lineno}: from {'.' * node.level}{node.module or ''} import {name}"
                 for node, name in _imported_names(path)
                 if name.startswith("_") and not name.startswith("__")]
    assert not offenders, offenders


def test_every_module_lives_in_a_stage():
    """Only the entry points sit at the top of the package; everything else is in a stage."""
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert top == ["__init__.py", "__main__.py", "cli.py"]
    stages = sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file())
    assert stages == ["base", "data", "evaluation", "explain", "imaging", "modeling", "pacs", "review"]


def test_no_undefined_or_unused_names():
    """pyflakes-level checks (ruff F) over the package, app, pages, tests and benchmarks."""
    result = subprocess.run([str(Path(sys.executable).with_name("ruff")), "check", "--select", "F",
                             "--output-format", "concise", "."], cwd=REPO, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stdout[-3000:]
