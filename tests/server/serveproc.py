"""``medhub serve`` (and other commands) as a real child process, for start-up and signal tests.

Each stream of the child is read by a thread into a list of lines; a test
waits for a line with :meth:`Lines.wait_for` (a condition variable, not a
sleep). The child's environment has no ``MEDHUB_*`` of the caller's, only
what the test gives.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parents[2]
BANNER = "medhub listening on "


class Lines:
    """The lines of one stream of a child process, as they arrive."""

    def __init__(self, stream: IO[str]) -> None:
        self.lines: list[str] = []
        self.closed = False
        self._cond = threading.Condition()
        self._stream = stream
        self._thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._thread.start()

    def _pump(self, stream: IO[str]) -> None:
        for line in stream:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    def wait_for(self, needle: str, timeout: float) -> str:
        """The first line containing ``needle``; AssertionError if none in ``timeout`` s."""

        def found() -> str | None:
            return next((line for line in self.lines if needle in line), None)

        with self._cond:
            self._cond.wait_for(lambda: found() is not None or self.closed, timeout)
            line = found()
        assert line is not None, f"no line with {needle!r} within {timeout}s:\n{self.text()}"
        return line

    def finish(self, timeout: float) -> None:
        """Read to the end (the child exited), then close our end of the pipe."""
        self._thread.join(timeout)
        if not self._thread.is_alive():
            self._stream.close()

    def text(self) -> str:
        with self._cond:
            return "\n".join(self.lines)

    def records(self) -> Iterator[dict[str, Any]]:
        """The JSON log records among the lines."""
        with self._cond:
            lines = list(self.lines)
        for line in lines:
            if line.startswith("{"):
                yield json.loads(line)


class Child:
    """A running ``medhub`` command with its stdout and stderr read into :class:`Lines`."""

    def __init__(
        self, args: list[str], env: dict[str, str], nofile: tuple[int, int] | None = None
    ) -> None:
        command = [sys.executable, "-m", "server.cli", *args]
        if nofile is not None:  # (soft, hard) RLIMIT_NOFILE, set by a shell that then execs
            soft, hard = nofile
            limit = f'ulimit -S -n {soft} && ulimit -H -n {hard} && exec "$@"'
            command = ["sh", "-c", limit, "sh", *command]
        self.proc = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        assert self.proc.stderr is not None
        self.out = Lines(self.proc.stdout)
        self.err = Lines(self.proc.stderr)

    def wait(self, timeout: float) -> int:
        """The exit code; AssertionError (and the child killed) if it runs past ``timeout`` s."""
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise AssertionError(
                f"still running after {timeout}s; stderr:\n{self.err.text()}"
            ) from None
        self.out.finish(5)
        self.err.finish(5)
        return code

    def stop(self) -> None:
        """Kill the child if it still runs; close the pipes."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.out.finish(5)
        self.err.finish(5)


def medhub_env(data_dir: Path, **settings: Any) -> dict[str, str]:
    """The caller's environment without ``MEDHUB_*``, plus ``settings`` as ``MEDHUB_<NAME>``.

    ``ws_max_connections`` defaults to 1000 (fits any descriptor limit a test
    machine has, so no warning unless a test asks for one).
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDHUB_")}
    values: dict[str, Any] = {"data_dir": str(data_dir), "log_json": "true"}
    values["ws_max_connections"] = 1000
    values.update(settings)
    for name, value in values.items():
        env[f"MEDHUB_{name.upper()}"] = str(value)
    return env


def run(
    args: list[str], env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run a short ``medhub`` command to completion (check=True)."""
    return subprocess.run(
        [sys.executable, "-m", "server.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=True,
    )
