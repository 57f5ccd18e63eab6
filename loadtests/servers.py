"""Server processes and machine facts shared by every benchmark section.

Each server runs as its own subprocess on a free loopback port, started fresh
(:func:`running`), and answers ``GET /healthz`` once ready; its warnings and
errors are collected for the report. CPU and memory of a process are read from
/proc; :func:`machine_facts` describes the machine for each section.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import signal
import socket
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

#: Seconds a server has to answer /healthz after start, and to exit after SIGTERM.
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 20.0

#: Every server kind the benchmarks start (kind -> command line after ``python -m``); each
#: takes ``--port`` and ``--data-dir`` and answers ``GET /healthz`` with 200 once ready.
SERVER_COMMANDS: dict[str, tuple[str, ...]] = {
    "plain": ("loadtests.plain_server",),
    "hub": ("loadtests.bench_server",),
    "broadcast": ("loadtests.bench_chat_servers", "broadcast"),
    "socketio": ("loadtests.bench_chat_servers", "socketio"),
    "relay": ("loadtests.bench_chat_servers", "relay"),
    "starlette": ("loadtests.rest_baseline",),
}


class BenchError(RuntimeError):
    """The benchmark could not measure (a server did not start, a reply was wrong)."""


# -- servers ---------------------------------------------------------------------------
def free_port() -> int:
    """A loopback port that was free a moment ago (the server binds it next)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class ServerProcess:
    """One server subprocess: its kind, port, and the file its output goes to."""

    kind: str
    port: int
    process: asyncio.subprocess.Process
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def log_lines(self) -> list[str]:
        try:
            return self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return []


async def _healthz(port: int) -> bool:
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 1.0)
    except (OSError, TimeoutError):
        return False
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        status = await asyncio.wait_for(reader.readline(), 2.0)
        return status.startswith(b"HTTP/1.1 200")
    except (OSError, TimeoutError):
        return False
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def start_server(kind: str, workdir: Path, extra: tuple[str, ...] = ()) -> ServerProcess:
    """Start server ``kind`` and wait (at most START_TIMEOUT_S) until /healthz answers 200.

    ``extra`` is added to the server's command line (diagnostics such as ``--profile``).
    """
    port = free_port()
    os.makedirs(workdir, exist_ok=True)
    # a port the system hands out again later in the run must not reuse a folder
    data_dir = Path(tempfile.mkdtemp(prefix=f"{kind}-{port}-", dir=workdir))
    log_path = data_dir / "server.log"
    cmd = [
        sys.executable,
        "-m",
        *SERVER_COMMANDS[kind],
        "--port",
        str(port),
        "--data-dir",
        str(data_dir),
        *extra,
    ]
    with log_path.open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            *cmd, stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log, cwd=os.getcwd()
        )
    server = ServerProcess(kind, port, process, log_path)
    deadline = time.monotonic() + START_TIMEOUT_S
    while not await _healthz(port):
        if process.returncode is not None or time.monotonic() > deadline:
            await stop_server(server)
            tail = "\n".join(server.log_lines()[-20:])
            raise BenchError(f"{kind} server did not start on port {port}:\n{tail}")
        await asyncio.sleep(0.05)
    return server


async def stop_server(server: ServerProcess, wait_s: float = STOP_TIMEOUT_S) -> int | None:
    """SIGTERM, wait at most ``wait_s``, then SIGKILL. Returns the exit code."""
    process = server.process
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), wait_s)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
    return process.returncode


@contextlib.asynccontextmanager
async def running(
    kind: str,
    workdir: Path,
    notes: list[str],
    extra: tuple[str, ...] = (),
    stop_wait_s: float = STOP_TIMEOUT_S,
) -> AsyncIterator[ServerProcess]:
    """A started server, stopped on exit; its warnings and errors are added to ``notes``.

    ``stop_wait_s``: seconds it has to exit after SIGTERM before SIGKILL (noted).
    """
    server = await start_server(kind, workdir, extra)
    try:
        yield server
    finally:
        stopping = time.monotonic()
        code = await stop_server(server, stop_wait_s)
        if code not in (0, -signal.SIGTERM):
            notes.append(
                f"{kind} server exited with code {code},"
                f" {time.monotonic() - stopping:.1f} s after SIGTERM"
            )
        for line in server.log_lines():
            if _is_problem(line):
                notes.append(f"{kind} server log: {line[:300]}{_exception_of(line)}")


def _exception_of(line: str) -> str:
    """`` ... raised: <the traceback's last line>`` of a JSON log record with ``exc``."""
    try:
        exc = json.loads(line).get("exc")
    except (ValueError, AttributeError):
        return ""
    if not isinstance(exc, str) or not exc.strip():
        return ""
    return f" ... raised: {exc.strip().splitlines()[-1][:200]}"


def _is_problem(line: str) -> bool:
    try:
        record = json.loads(line)
    except ValueError:
        return "Traceback" in line or "Error" in line
    return isinstance(record, dict) and record.get("level") in ("warning", "error", "critical")


# -- process memory ------------------------------------------------------------------------
def memory_of(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of process ``pid`` in bytes, from /proc."""
    rss = pss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) * 1024
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                pss = int(line.split()[1]) * 1024
    return rss, pss


def cpu_seconds(pid: int) -> float:
    """User + system CPU time process ``pid`` has used, in seconds (from /proc/PID/stat)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()  # the fields after "(comm) "
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- the machine ------------------------------------------------------------------------------
def package_version(package: str) -> str:
    """The installed version of ``package``, or ``not installed``."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine_facts() -> list[str]:
    """CPU, cores, memory, kernel, Python and the versions that matter, one fact a line."""
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())  # 1, 5 and 15 minutes
    versions = ", ".join(
        f"{p} {package_version(p)}"
        for p in ("uvicorn", "websockets", "starlette", "httptools", "uvloop", "msgpack", "msgspec")
    )
    return [
        f"CPU: {cpu}, {os.cpu_count()} cores; RAM {mem}",
        f"OS: {platform.system()} {platform.release()}; load average at start {load}",
        f"Python {platform.python_version()} ({platform.python_implementation()})",
        f"Packages: {versions}",
    ]
