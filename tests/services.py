"""Real backing services for tests, each on a free loopback port.

``start_redis(tmp_path)`` launches a private ``redis-server`` (never the
machine's own on 6379) without persistence, waits until it answers PING, and
returns a :class:`RedisProcess` with ``.url`` and ``.stop()``. A missing binary
or a server that does not come up raises :class:`ServiceError`, so a fixture
built on it fails instead of skipping.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

READY_TIMEOUT_S = 15.0


class ServiceError(RuntimeError):
    """A test service could not be started."""


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _redis_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


@dataclass
class RedisProcess:
    """A running private redis-server; call :meth:`stop` when done."""

    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>/0``."""
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        """Terminate the server (kill it after 5 s). Idempotent."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


def start_redis(tmp_path: Path, *, attempts: int = 3) -> RedisProcess:
    """Start redis-server on a free loopback port and wait until it answers PING.

    Raises :class:`ServiceError` when the binary is missing or the server does
    not answer within ``READY_TIMEOUT_S`` (after ``attempts`` ports).
    """
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not Path(binary).exists():
        raise ServiceError("redis-server not found: install it (apt-get install redis-server)")
    tmp_path.mkdir(parents=True, exist_ok=True)
    last_log = ""
    for attempt in range(attempts):
        port = free_port()
        log_path = tmp_path / f"redis-{port}.log"
        args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        args += ["--appendonly", "no", "--dir", str(tmp_path), "--logfile", str(log_path)]
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        server = RedisProcess(proc, port, log_path)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline and proc.poll() is None:
            if _redis_answers(port):
                return server
            time.sleep(0.02)  # polling interval of the readiness probe, not a wait
        server.stop()
        last_log = log_path.read_text(errors="replace")[-2000:] if log_path.exists() else ""
        if attempt + 1 < attempts and "Address already in use" in last_log:
            continue
        break
    raise ServiceError(f"redis-server did not become ready; log tail:\n{last_log}")
