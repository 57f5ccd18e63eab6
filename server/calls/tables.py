"""Call tables (SQLAlchemy Core, on the shared :data:`server.store.schema.metadata`).

Frozen by migration ``0006_calls``. One row per call, the call's record in its
conversation (or a test call with an echo service): who called whom, when it
was answered and ended, its duration and end reason, and the parties' last
quality reports (msgpack, bounded: ``calls_quality_max_reports`` per party).
Pseudonymous ids only; no SDP, no candidate is ever stored.

The row is inserted when the invite is accepted for ringing (committed before
anyone can ring) and completed once, by the node that ends the call.
"""

from __future__ import annotations

import sqlalchemy as sa

from server.store.schema import metadata

call_record = sa.Table(
    "call_record",
    metadata,
    sa.Column("id", sa.String(16), primary_key=True),
    sa.Column("kind", sa.String(16), nullable=False),  # conversation | echo
    sa.Column("org", sa.String(128), nullable=False),  # the conversation's (echo: the caller's)
    sa.Column("conv_id", sa.String(64)),
    sa.Column("consultation_id", sa.String(64)),
    sa.Column("caller", sa.String(128), nullable=False),
    sa.Column("callee", sa.String(128), nullable=False),
    sa.Column("media", sa.String(8), nullable=False),
    sa.Column("invited_us", sa.BigInteger, nullable=False),
    sa.Column("answered_us", sa.BigInteger),
    sa.Column("ended_us", sa.BigInteger),
    sa.Column("duration_ms", sa.BigInteger),
    sa.Column("end_reason", sa.String(16)),
    sa.Column("ended_by", sa.String(128)),
    sa.Column("quality", sa.LargeBinary),
    sa.Index(None, "conv_id", "invited_us"),
    sa.Index(None, "consultation_id"),
)
