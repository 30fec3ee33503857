"""Feedback-store backends: SQLite in a temp folder, and a throwaway PostgreSQL server.

The PostgreSQL server (scripts/pg_throwaway.sh) starts once per test session on 127.0.0.1, in a
temp folder of its own, and is stopped at the end; each test gets a fresh database in it. Where it
cannot start, its tests skip with the reason, unless CXR_REQUIRE_POSTGRES=1 (CI), where they fail.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "pg_throwaway.sh"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def postgres_server():
    """Base URL (no database) of a PostgreSQL server that lives as long as the test session."""
    # under /tmp: the server's own user must reach it, and its socket path must stay short
    folder = Path(tempfile.mkdtemp(prefix="cxr-pg-", dir="/tmp" if Path("/tmp").is_dir() else None))
    try:
        done = subprocess.run(["bash", str(SCRIPT), "start", str(folder), str(free_port())],
                              capture_output=True, text=True, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        done = subprocess.CompletedProcess([], 1, "", str(exc))
    if done.returncode != 0:
        shutil.rmtree(folder, ignore_errors=True)
        reason = f"PostgreSQL could not be started: {done.stderr.strip()[-500:]}"
        if os.environ.get("CXR_REQUIRE_POSTGRES") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    try:
        yield done.stdout.strip().splitlines()[-1]
    finally:
        subprocess.run(["bash", str(SCRIPT), "stop", str(folder)], capture_output=True, timeout=120, check=False)
        shutil.rmtree(folder, ignore_errors=True)


def admin_sql(base: str, sql: str) -> None:
    import psycopg

    with psycopg.connect(base.replace("postgresql+psycopg://", "postgresql://") + "/postgres",
                         autocommit=True) as conn:
        conn.execute(sql)


class Backend:
    """One fresh feedback database: its URL, and admin actions the failure tests need."""

    def __init__(self, kind: str, url: str, base: str | None = None, name: str | None = None):
        self.kind, self.url, self.base, self.name = kind, url, base, name

    def read_only_url(self) -> str:
        """A URL to the same database on which every write fails."""
        if self.kind == "sqlite":
            return f"sqlite:///file:{self.url[len('sqlite:///'):]}?mode=ro&uri=true"
        admin_sql(self.base, f"ALTER DATABASE {self.name} SET default_transaction_read_only = on")
        return self.url

    def unreachable_url(self) -> str:
        if self.kind == "sqlite":  # a folder that cannot be created (a file is in the way)
            blocker = Path(self.url[len("sqlite:///"):]).parent / "blocker"
            blocker.write_text("not a folder")
            return f"sqlite:///{blocker / 'sub' / 'feedback.sqlite'}"
        return f"postgresql+psycopg://cxr@127.0.0.1:{free_port()}/{self.name}"

    def drop(self) -> None:
        """Make the database vanish under open stores (PostgreSQL only)."""
        admin_sql(self.base, f"DROP DATABASE IF EXISTS {self.name} WITH (FORCE)")


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request, tmp_path):
    """The feedback store's tests run on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        yield Backend("sqlite", f"sqlite:///{tmp_path / 'fb.sqlite'}")
        return
    base = request.getfixturevalue("postgres_server")
    name = f"fb_{uuid.uuid4().hex[:12]}"
    admin_sql(base, f"CREATE DATABASE {name}")
    try:
        yield Backend("postgresql", f"{base}/{name}", base, name)
    finally:
        admin_sql(base, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
