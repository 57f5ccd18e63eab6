"""A real coturn for the tests (Debian's ``turnserver``), on loopback, with a shared secret.

``use-auth-secret`` + ``static-auth-secret``: coturn checks the time-limited
credentials the hub mints (``server/calls/turn.py``). ``allow-loopback-peers``
lets it relay between peers on 127.0.0.1 (without it, relaying fails silently).
Ready when it answers a STUN binding request.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

READY_TIMEOUT_S = 10.0


@dataclass
class Coturn:
    port: int
    directory: Path
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"turn:127.0.0.1:{self.port}?transport=udp"

    def log(self) -> str:
        path = self.directory / "turn.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _answers_stun(port: int) -> bool:
    request = b"\x00\x01\x00\x00\x21\x12\xa4\x42" + os.urandom(12)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.1)
        s.sendto(request, ("127.0.0.1", port))
        try:
            reply, _ = s.recvfrom(2048)
        except OSError:
            return False
    return reply[:2] == b"\x01\x01" and reply[8:20] == request[8:20]


def start_coturn(directory: Path, secret: str, relay_ports: tuple[int, int]) -> Coturn:
    """Start ``turnserver`` with ``secret`` on a free loopback port; return once it answers."""
    directory.mkdir(parents=True, exist_ok=True)
    port = _free_udp_port()
    config = directory / "turn.conf"
    lines = [
        "listening-ip=127.0.0.1", f"listening-port={port}", "relay-ip=127.0.0.1",
        f"min-port={relay_ports[0]}", f"max-port={relay_ports[1]}", "use-auth-secret",
        f"static-auth-secret={secret}", "realm=medhub.test", "no-tls", "no-dtls", "no-cli",
        "allow-loopback-peers", f"userdb={directory / 'turndb'}",
        f"log-file={directory / 'turn.log'}", f"pidfile={directory / 'turn.pid'}", "simple-log",
    ]  # fmt: skip
    config.write_text("\n".join(lines) + "\n")
    process = subprocess.Popen(
        ["turnserver", "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not _answers_stun(port):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"coturn did not start (exit {process.poll()})")
    return Coturn(port, directory, process)
