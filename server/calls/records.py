"""The call records in the database (``call_record``): SQL only, run by the caller.

Writes run inside the node's write sequence (:func:`server.store.jobs.write`),
so each commits with its audit entry. Reads run in read-only transactions
(:meth:`server.store.db.Database.run` with ``readonly``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgpack
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from server.calls.state import CallState
from server.calls.tables import call_record

#: Records one listing returns at most.
MAX_LIST = 200


@dataclass(frozen=True, slots=True)
class Ending:
    """How a call ended, to complete its record."""

    answered_ms: int | None
    ended_ms: int
    reason: str
    by: str | None
    quality: dict[str, bytes]  # role name -> msgpack list of Quality


def insert(conn: Connection, state: CallState) -> str:
    """Insert the record of a new call (before anyone is rung); its id."""
    conn.execute(
        sa.insert(call_record).values(
            id=state.id, kind=state.kind, org=state.org, conv_id=state.conv,
            consultation_id=state.consultation, caller=state.caller, callee=state.callee,
            media=state.media, invited_us=state.invited_ms * 1000,
        )
    )  # fmt: skip
    return state.id


def finish(conn: Connection, state: CallState, end: Ending) -> bool:
    """Complete the record of an ended call, once; False when it was already complete."""
    quality = None
    if end.quality:
        quality = msgpack.packb({k: msgpack.unpackb(v) for k, v in end.quality.items()})
    duration = None if end.answered_ms is None else max(end.ended_ms - end.answered_ms, 0)
    c = call_record.c
    result = conn.execute(
        sa.update(call_record)
        .where(c.id == state.id, c.ended_us.is_(None))
        .values(
            answered_us=None if end.answered_ms is None else end.answered_ms * 1000,
            ended_us=end.ended_ms * 1000, duration_ms=duration, end_reason=end.reason,
            ended_by=end.by, quality=quality,
        )
    )  # fmt: skip
    return bool(result.rowcount)


def _row(r: Any) -> dict[str, Any]:
    out = {
        "call": r.id, "kind": r.kind, "org": r.org, "conv": r.conv_id,
        "consultation": r.consultation_id, "caller": r.caller, "callee": r.callee,
        "media": r.media, "invited_ms": r.invited_us // 1000,
        "answered_ms": None if r.answered_us is None else r.answered_us // 1000,
        "ended_ms": None if r.ended_us is None else r.ended_us // 1000,
        "duration_ms": r.duration_ms, "reason": r.end_reason, "ended_by": r.ended_by,
    }  # fmt: skip
    return out


def get(conn: Connection, call_id: str) -> dict[str, Any] | None:
    """One record with its quality reports (``quality``: role -> list of reports)."""
    r = conn.execute(sa.select(call_record).where(call_record.c.id == call_id)).first()
    if r is None:
        return None
    out = _row(r)
    out["quality"] = {} if r.quality is None else msgpack.unpackb(r.quality)
    return out


def of_conversation(
    conn: Connection, conv: str, *, before_ms: int | None = None, limit: int = 50
) -> list[dict[str, Any]]:
    """The newest records of conversation ``conv`` (newest first), without quality."""
    c = call_record.c
    query = sa.select(call_record).where(c.conv_id == conv)
    if before_ms is not None:
        query = query.where(c.invited_us < before_ms * 1000)
    query = query.order_by(c.invited_us.desc()).limit(min(limit, MAX_LIST))
    return [_row(r) for r in conn.execute(query)]


def of_consultation(conn: Connection, consultation: str) -> list[dict[str, Any]]:
    """Every record of consultation ``consultation`` (newest first, at most MAX_LIST)."""
    c = call_record.c
    query = (
        sa.select(call_record)
        .where(c.consultation_id == consultation)
        .order_by(c.invited_us.desc())
        .limit(MAX_LIST)
    )
    return [_row(r) for r in conn.execute(query)]
