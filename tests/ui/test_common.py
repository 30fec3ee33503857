"""ui/common.py: the background warm-up of the models never parses Python source, so it cannot
race a page's compile (CPython 3.11 fails a compile with "AST constructor recursion depth
mismatch" when two threads use the ast module at once)."""

from __future__ import annotations

import ast
import threading

import pytest

pytestmark = pytest.mark.usefixtures("app_env")  # tests/ui/conftest.py


def test_the_warm_up_thread_never_uses_the_ast_module(monkeypatch):
    from cxr_core.base.config import settings
    from ui import common

    calls = []
    parse = ast.parse

    def watched(*args, **kwargs):
        calls.append(threading.current_thread().name)
        return parse(*args, **kwargs)

    monkeypatch.setattr(ast, "parse", watched)
    common.get_reviewer.clear()
    future = common.warm_up_in_background(str(settings().default_bundle_path))
    reviewer = future.result(timeout=600)
    assert reviewer.input_model is not None and reviewer.engines
    assert not [name for name in calls if name.startswith("cxr-warm-up")], calls
    common.get_reviewer.clear()


def test_a_bundle_that_cannot_be_loaded_is_reported_by_the_future(tmp_path):
    from cxr_core.base.errors import CxrError
    from ui import common

    common.get_reviewer.clear()
    future = common.warm_up_in_background(str(tmp_path / "no-bundle"))
    with pytest.raises(CxrError):
        future.result(timeout=10)
    common.get_reviewer.clear()
