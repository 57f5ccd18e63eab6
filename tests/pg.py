"""A real, private PostgreSQL for the tests: ``start_postgres`` (session fixture).

Runs ``initdb`` and ``postgres`` from ``/usr/lib/postgresql/*/bin`` in a fresh
temporary directory, listening on a free loopback port (never the machine's
own server on 5432), and stops it at the end of the session. As root the
server runs as the ``postgres`` OS user (``Popen(user=...)``, the same as
``runuser -u postgres`` but without a wrapper process between us and it).
A missing binary FAILS the tests (it never skips them). Readiness is
awaited by polling ``pg_isready``.

Use :func:`fresh_database` to get an empty database per test.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

READY_TIMEOUT_S = 30.0


def _bin_dir() -> Path:
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/postgres"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    if not found:
        pytest.fail("PostgreSQL binaries not found under /usr/lib/postgresql/*/bin")
    return Path(found[-1]).parent


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_postgres() -> dict[str, Any]:
    """Popen arguments that run the child as the ``postgres`` user when we are root.

    The child itself switches user (no ``runuser`` in between), so the pid we
    hold is the postmaster's and our signals reach it.
    """
    if os.geteuid() != 0:
        return {}
    pw = pwd.getpwnam("postgres")
    return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": [], "cwd": "/"}


class PostgresServer:
    """A running private server; ``url`` is an asyncpg URL of its ``postgres`` database."""

    def __init__(self) -> None:
        self.bin = _bin_dir()
        self.root = Path(tempfile.mkdtemp(prefix="medhub-pg-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(self.root, pw.pw_uid, pw.pw_gid)

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        subprocess.run(
            [str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust",
             "-E", "UTF8", "--no-sync", "--no-instructions"],
            check=True, capture_output=True, **_as_postgres(),
        )  # fmt: skip
        self.launch()

    def halt(self) -> None:
        """Stop the server (fast shutdown: clients are cut off) but keep its data."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            self.proc.wait(timeout=20)

    def launch(self) -> None:
        """Start the postgres process on the existing data directory; wait until ready."""
        log = open(self.root / "server.log", "ab")  # noqa: SIM115 (lives with the process)
        args = [str(self.bin / "postgres"), "-D", str(self.data), "-p", str(self.port)]
        for setting in (
            "listen_addresses=127.0.0.1",
            f"unix_socket_directories={self.root}",
            "fsync=off",
            "max_connections=100",
        ):
            args += ["-c", setting]
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, **_as_postgres())
        log.close()
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            if self.proc.poll() is not None:
                pytest.fail(f"postgres exited early:\n{self.log_tail()}")
            probe = subprocess.run(
                [str(self.bin / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-q"],
                check=False,
            )
            if probe.returncode == 0:
                return
            if time.monotonic() > deadline:
                pytest.fail(f"postgres not ready after {READY_TIMEOUT_S}s:\n{self.log_tail()}")
            time.sleep(0.05)  # polling interval, not a wait for readiness

    def log_tail(self) -> str:
        try:
            return (self.root / "server.log").read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # fast shutdown: disconnects any client
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def start_postgres() -> Iterator[PostgresServer]:
    """A private PostgreSQL server for the whole session (fails if it cannot start)."""
    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.stop()


async def fresh_database(server: PostgresServer) -> str:
    """Create an empty database on ``server`` and return its asyncpg URL."""
    import asyncpg

    name = f"t_{uuid.uuid4().hex[:16]}"
    conn = await asyncpg.connect(host="127.0.0.1", port=server.port, user="postgres",
                                 database="postgres")  # fmt: skip
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return f"postgresql+asyncpg://postgres@127.0.0.1:{server.port}/{name}"


@pytest.fixture(params=["sqlite", "postgresql"])
async def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database URL: a SQLite file in ``tmp_path`` or a fresh PostgreSQL database.

    Import it (with ``start_postgres``) into a ``conftest.py`` to run each test
    body on both backends.
    """
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'medhub.db'}"
    server: PostgresServer = request.getfixturevalue("start_postgres")
    return await fresh_database(server)
