"""Chat tables (SQLAlchemy Core, on the shared :data:`server.store.schema.metadata`).

Frozen by migration ``0003_chat``. Message text (and titles) are AES-GCM
envelopes (:mod:`server.security.crypto`), bound by their AAD to the row
(``conv:seq`` or ``conv:seq:version``); only pseudonymous ids are in clear.

- ``chat_conversation``: one row per conversation; ``last_seq`` is the
  sequence allocator (updated in the transaction that stores the events, so
  two nodes never allocate the same seq).
- ``chat_member``: who may read and write, with delivery / read positions.
- ``chat_message``: the ordered event log of a conversation (``message``,
  ``edit``, ``delete``); a ``message`` row holds the current text.
- ``chat_message_version``: every earlier text of an edited or deleted
  message, with who and when.
"""

from __future__ import annotations

import sqlalchemy as sa

from server.store.schema import metadata

chat_conversation = sa.Table(
    "chat_conversation",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("org", sa.String(128), nullable=False),
    sa.Column("title", sa.LargeBinary),
    sa.Column("consultation_id", sa.String(64), unique=True),
    sa.Column("patient_id", sa.String(128)),
    sa.Column("direct_key", sa.String(160), unique=True),
    sa.Column("last_seq", sa.BigInteger, nullable=False),
    sa.Column("created_by", sa.String(128), nullable=False),
    sa.Column("created_us", sa.BigInteger, nullable=False),
)

chat_member = sa.Table(
    "chat_member",
    metadata,
    sa.Column("conv_id", sa.String(64), primary_key=True),
    sa.Column("user_id", sa.String(128), primary_key=True),
    sa.Column("role", sa.String(32), nullable=False),
    sa.Column("delivered_seq", sa.BigInteger, nullable=False),
    sa.Column("read_seq", sa.BigInteger, nullable=False),
    sa.Column("joined_us", sa.BigInteger, nullable=False),
    sa.ForeignKeyConstraint(["conv_id"], ["chat_conversation.id"]),
    sa.Index(None, "user_id"),
)

chat_message = sa.Table(
    "chat_message",
    metadata,
    sa.Column("conv_id", sa.String(64), primary_key=True),
    sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("kind", sa.String(8), nullable=False),
    sa.Column("sender", sa.String(128), nullable=False),
    sa.Column("client_msg_id", sa.String(64), nullable=False),
    sa.Column("created_us", sa.BigInteger, nullable=False),
    sa.Column("body", sa.LargeBinary),
    sa.Column("record_ref", sa.String(128)),
    sa.Column("target_seq", sa.BigInteger),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("edited_us", sa.BigInteger),
    sa.Column("deleted_us", sa.BigInteger),
    sa.ForeignKeyConstraint(["conv_id"], ["chat_conversation.id"]),
    sa.UniqueConstraint("conv_id", "sender", "client_msg_id"),
)

chat_message_version = sa.Table(
    "chat_message_version",
    metadata,
    sa.Column("conv_id", sa.String(64), primary_key=True),
    sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("action", sa.String(8), nullable=False),
    sa.Column("actor", sa.String(128), nullable=False),
    sa.Column("at_us", sa.BigInteger, nullable=False),
    sa.Column("body", sa.LargeBinary),
)
