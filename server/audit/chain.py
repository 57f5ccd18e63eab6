"""The HMAC chain, pure: canonical encoding, tagging and verification.

No I/O and no event loop: the writer seals entries with :func:`seal`, the
verifier feeds stored entries in ``seq`` order to :class:`ChainVerifier`.

Encoding (format version 1): the canonical bytes of an entry are the compact
JSON array (UTF-8, no whitespace)::

    [1, ts_us, node, actor, acting_for, role, org, action, target_type,
     target_id, result, reason, source, request_id, key_id]

with ``null`` for an absent field. The tag of entry ``seq`` is::

    tag(seq) = HMAC-SHA256(key[key_id], tag(seq - 1) || u64be(seq) || canonical)

with ``tag(0)`` = 32 zero bytes (or, after a purge, the anchor's tag).

Checkpoints and purge anchors (``(kind, seq, tag, ts_us)``) carry their own
``mac = HMAC-SHA256(key, b"medhub-audit-" || kind || 0x00 || u64be(seq) ||
tag || u64be(ts_us))`` so that they cannot be forged without the key either.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import NamedTuple

import msgspec

FORMAT_VERSION = 1
GENESIS_TAG = bytes(32)
Keyring = Mapping[str, bytes]

_json = msgspec.json.Encoder()


class Entry(NamedTuple):
    """One stored audit entry; attribute names are the ``audit_log`` column names.

    A named tuple (immutable, cheap to build: the writer makes thousands per batch).
    """

    seq: int
    ts_us: int
    node: str
    actor: str | None
    acting_for: str | None
    role: str | None
    org: str | None
    action: str
    target_type: str | None
    target_id: str | None
    result: str
    reason: str | None
    source: str | None
    request_id: str | None
    key_id: str
    tag: bytes = b""


def canonical(e: Entry) -> bytes:
    """The bytes covered by the tag (every field but ``seq`` and ``tag``)."""
    return _json.encode(
        [
            FORMAT_VERSION,
            e.ts_us,
            e.node,
            e.actor,
            e.acting_for,
            e.role,
            e.org,
            e.action,
            e.target_type,
            e.target_id,
            e.result,
            e.reason,
            e.source,
            e.request_id,
            e.key_id,
        ]
    )


def compute_tag(key: bytes, prev_tag: bytes, seq: int, body: bytes) -> bytes:
    """``HMAC-SHA256(key, prev_tag || u64be(seq) || body)``."""
    mac = hmac.new(key, prev_tag, hashlib.sha256)
    mac.update(seq.to_bytes(8, "big"))
    mac.update(body)
    return mac.digest()


def seal(key: bytes, prev_tag: bytes, e: Entry) -> Entry:
    """``e`` with its tag computed from ``prev_tag`` (``e.tag`` is ignored)."""
    return e._replace(tag=compute_tag(key, prev_tag, e.seq, canonical(e)))


class CheckpointKind(StrEnum):
    """A periodic ``checkpoint`` of the head, or a purge ``anchor``."""

    CHECKPOINT = "checkpoint"
    ANCHOR = "anchor"


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """``(seq, tag)`` of an entry, seen at ``ts_us`` by ``node``, MAC'd with ``key_id``."""

    kind: CheckpointKind
    seq: int
    tag: bytes
    ts_us: int
    node: str
    key_id: str
    mac: bytes


def _checkpoint_mac(key: bytes, kind: str, seq: int, tag: bytes, ts_us: int) -> bytes:
    msg = b"medhub-audit-" + kind.encode() + b"\x00" + seq.to_bytes(8, "big") + tag
    return hmac.new(key, msg + ts_us.to_bytes(8, "big"), hashlib.sha256).digest()


def sign_checkpoint(
    key: bytes, key_id: str, kind: CheckpointKind, seq: int, tag: bytes, ts_us: int, node: str
) -> Checkpoint:
    """A checkpoint (or anchor) for entry ``seq`` whose tag is ``tag``."""
    return Checkpoint(
        kind, seq, tag, ts_us, node, key_id, _checkpoint_mac(key, kind, seq, tag, ts_us)
    )


def checkpoint_authentic(cp: Checkpoint, keyring: Keyring) -> bool:
    """True when ``cp.mac`` is valid under ``keyring[cp.key_id]``."""
    key = keyring.get(cp.key_id)
    if key is None:
        return False
    expected = _checkpoint_mac(key, cp.kind, cp.seq, cp.tag, cp.ts_us)
    return hmac.compare_digest(expected, cp.mac)


class BreakKind(StrEnum):
    """Why the chain is broken at a sequence number."""

    GAP = "gap"  # the entry with this seq is missing (deleted)
    BAD_TAG = "bad_tag"  # bytes changed, entries reordered, or forged with another key
    UNKNOWN_KEY = "unknown_key"  # the entry names a key id absent from the keyring
    CHECKPOINT_MISMATCH = "checkpoint_mismatch"  # tag differs from an external checkpoint
    TRUNCATED = "truncated"  # a checkpoint or the chain head names a later seq
    BAD_CHECKPOINT = "bad_checkpoint"  # a checkpoint or anchor whose own MAC is invalid


@dataclass(frozen=True, slots=True)
class Break:
    """The first broken sequence number, the kind of break, and a human detail."""

    seq: int
    kind: BreakKind
    detail: str


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """Outcome of a verification: ``ok`` only when no break was found."""

    first_break: Break | None
    checked: int
    first_seq: int | None
    last_seq: int | None
    checkpoints_checked: int = 0

    @property
    def ok(self) -> bool:
        return self.first_break is None


@dataclass(slots=True)
class ChainVerifier:
    """Feed entries in ascending ``seq`` order, then call :meth:`finish`.

    ``start_seq`` / ``prev_tag``: where the verified range begins (``1`` and
    :data:`GENESIS_TAG` for the whole chain, ``anchor.seq + 1`` and
    ``anchor.tag`` after a purge). ``checkpoints``: external checkpoints; each
    must be authentic and match the stored tag of its seq (those outside
    ``[start_seq, to_seq]`` are ignored). Verification stops at the first break.
    """

    keyring: Keyring
    start_seq: int = 1
    prev_tag: bytes = GENESIS_TAG
    to_seq: int | None = None
    checkpoints: Sequence[Checkpoint] = ()
    _expected: int = field(init=False)
    _break: Break | None = field(init=False, default=None)
    _checked: int = field(init=False, default=0)
    _first: int | None = field(init=False, default=None)
    _by_seq: dict[int, bytes] = field(init=False, default_factory=dict)
    _cp_checked: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self._expected = self.start_seq
        for cp in sorted(self.checkpoints, key=lambda c: c.seq):
            if cp.seq < self.start_seq or (self.to_seq is not None and cp.seq > self.to_seq):
                continue
            if not checkpoint_authentic(cp, self.keyring):
                self._note(Break(cp.seq, BreakKind.BAD_CHECKPOINT, f"{cp.kind} by {cp.node}"))
                continue
            if self._by_seq.setdefault(cp.seq, cp.tag) != cp.tag:
                self._note(Break(cp.seq, BreakKind.CHECKPOINT_MISMATCH, "checkpoints disagree"))

    def _note(self, brk: Break) -> None:
        if self._break is None or brk.seq < self._break.seq:
            self._break = brk

    @property
    def broken(self) -> bool:
        """True once a break is known; further entries are ignored."""
        return self._break is not None and self._break.seq <= self._expected

    def feed(self, e: Entry) -> None:
        """Check the next entry (ascending seq). Never raises on a bad entry."""
        if self.broken:
            return
        if e.seq != self._expected:
            detail = f"expected seq {self._expected}, found {e.seq}"
            self._note(Break(self._expected, BreakKind.GAP, detail))
            return
        key = self.keyring.get(e.key_id)
        if key is None:
            self._note(Break(e.seq, BreakKind.UNKNOWN_KEY, f"key id {e.key_id!r}"))
            return
        if self._first is None:
            self._first = e.seq
        if not hmac.compare_digest(compute_tag(key, self.prev_tag, e.seq, canonical(e)), e.tag):
            self._note(Break(e.seq, BreakKind.BAD_TAG, "tag does not match content and order"))
            return
        expected_cp = self._by_seq.get(e.seq)
        if expected_cp is not None:
            self._cp_checked += 1
            if not hmac.compare_digest(expected_cp, e.tag):
                self._note(Break(e.seq, BreakKind.CHECKPOINT_MISMATCH, "external checkpoint"))
                return
        self.prev_tag = e.tag
        self._checked += 1
        self._expected += 1

    def finish(self, *, head_seq: int | None = None) -> VerifyResult:
        """The result; ``head_seq`` is the chain head recorded in the database.

        A checkpoint or head beyond the last entry seen means the tail was
        truncated: the break names the first missing seq.
        """
        last = self._expected - 1
        if not self.broken:
            limit = self.to_seq
            claims = [s for s in self._by_seq if s > last]
            if head_seq is not None and head_seq > last and (limit is None or last < limit):
                claims.append(head_seq)
            if claims:
                self._note(Break(last + 1, BreakKind.TRUNCATED, f"entries up to {max(claims)}"))
        return VerifyResult(
            first_break=self._break,
            checked=self._checked,
            first_seq=self._first,
            last_seq=last if self._checked else None,
            checkpoints_checked=self._cp_checked,
        )


def verify(
    entries: Iterable[Entry],
    keyring: Keyring,
    *,
    start_seq: int = 1,
    prev_tag: bytes = GENESIS_TAG,
    to_seq: int | None = None,
    checkpoints: Sequence[Checkpoint] = (),
    head_seq: int | None = None,
) -> VerifyResult:
    """Verify ``entries`` (ascending seq) in one call; see :class:`ChainVerifier`."""
    v = ChainVerifier(keyring, start_seq, prev_tag, to_seq, checkpoints)
    for e in entries:
        v.feed(e)
        if v.broken:
            break
    return v.finish(head_seq=head_seq)
