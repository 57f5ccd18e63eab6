"""Checkpoint sinks: where ``(seq, tag, time)`` of the chain is written outside the database.

A checkpoint kept outside the database lets ``medhub audit verify`` detect a
truncated tail (the database ends before a checkpoint) and a rewritten chain
(a stored tag differs from the checkpoint). Purge anchors are written here
too. The default sink is an append-only file; a Redis list or another
database can implement :class:`CheckpointSink` later for multi-node setups.

File format: one JSON object per line, ``{"v": 1, "kind": "checkpoint" |
"anchor", "seq": int, "tag": hex, "ts_us": int, "node": str, "key_id": str,
"mac": hex}``. Lines are appended with ``O_APPEND`` and ``fsync``'d; a torn
last line (crash mid-write) is skipped when reading and counted as malformed.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Protocol

import msgspec

from server.audit.chain import Checkpoint, CheckpointKind


class CheckpointSink(Protocol):
    """Where checkpoints go. Implementations must be append-only and durable."""

    async def append(self, cp: Checkpoint) -> None:
        """Persist ``cp`` durably before returning. Raises ``OSError`` on failure."""

    async def read_all(self) -> list[Checkpoint]:
        """Every checkpoint persisted so far (oldest first)."""


class _Line(msgspec.Struct, frozen=True):
    v: int
    kind: CheckpointKind
    seq: int
    tag: str
    ts_us: int
    node: str
    key_id: str
    mac: str


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(_Line)


def encode_line(cp: Checkpoint) -> bytes:
    """One file line (with its newline) for ``cp``."""
    line = _Line(1, cp.kind, cp.seq, cp.tag.hex(), cp.ts_us, cp.node, cp.key_id, cp.mac.hex())
    return _encoder.encode(line) + b"\n"


def decode_line(raw: bytes) -> Checkpoint:
    """The checkpoint of one line; raises ``ValueError`` on a malformed line."""
    try:
        line = _decoder.decode(raw)
        return Checkpoint(line.kind, line.seq, bytes.fromhex(line.tag), line.ts_us, line.node,
                          line.key_id, bytes.fromhex(line.mac))  # fmt: skip
    except (msgspec.DecodeError, ValueError) as exc:
        raise ValueError(f"malformed checkpoint line: {exc}") from exc


class FileCheckpointSink:
    """An append-only checkpoint file (created with its directory, mode 0600)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.malformed = 0

    def append_sync(self, cp: Checkpoint) -> None:
        """Blocking append + fsync; prefer :meth:`append` from the event loop."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, encode_line(cp))
            os.fsync(fd)
        finally:
            os.close(fd)

    async def append(self, cp: Checkpoint) -> None:
        """Append ``cp`` in a worker thread (the loop never waits on the disk)."""
        await asyncio.to_thread(self.append_sync, cp)

    def read_all_sync(self) -> list[Checkpoint]:
        """Blocking read; a missing file is an empty list."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return []
        out: list[Checkpoint] = []
        self.malformed = 0
        for raw in data.splitlines():
            if not raw.strip():
                continue
            try:
                out.append(decode_line(raw))
            except ValueError:
                self.malformed += 1
        return out

    async def read_all(self) -> list[Checkpoint]:
        """Every well-formed checkpoint in the file, oldest first."""
        return await asyncio.to_thread(self.read_all_sync)
