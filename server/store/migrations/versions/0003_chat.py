"""Chat: conversations, members, the per-conversation event log, message versions.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "chat_conversation",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("org", sa.String(128), nullable=False),
        sa.Column("title", sa.LargeBinary),
        sa.Column("consultation_id", sa.String(64)),
        sa.Column("patient_id", sa.String(128)),
        sa.Column("direct_key", sa.String(160)),
        sa.Column("last_seq", sa.BigInteger, nullable=False),
        sa.Column("created_by", sa.String(128), nullable=False),
        sa.Column("created_us", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_chat_conversation"),
        sa.UniqueConstraint("consultation_id", name="uq_chat_conversation_consultation_id"),
        sa.UniqueConstraint("direct_key", name="uq_chat_conversation_direct_key"),
    )
    op.create_table(
        "chat_member",
        sa.Column("conv_id", sa.String(64), nullable=False),
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("role", sa.String(32), nullable=False),
        sa.Column("delivered_seq", sa.BigInteger, nullable=False),
        sa.Column("read_seq", sa.BigInteger, nullable=False),
        sa.Column("joined_us", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("conv_id", "user_id", name="pk_chat_member"),
        sa.ForeignKeyConstraint(
            ["conv_id"],
            ["chat_conversation.id"],
            name="fk_chat_member_conv_id_chat_conversation",
        ),
    )
    op.create_index("ix_chat_member_user_id", "chat_member", ["user_id"])
    op.create_table(
        "chat_message",
        sa.Column("conv_id", sa.String(64), nullable=False),
        sa.Column("seq", sa.BigInteger, autoincrement=False, nullable=False),
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
        sa.PrimaryKeyConstraint("conv_id", "seq", name="pk_chat_message"),
        sa.ForeignKeyConstraint(
            ["conv_id"],
            ["chat_conversation.id"],
            name="fk_chat_message_conv_id_chat_conversation",
        ),
        sa.UniqueConstraint(
            "conv_id",
            "sender",
            "client_msg_id",
            name="uq_chat_message_conv_id_sender_client_msg_id",
        ),
    )
    op.create_table(
        "chat_message_version",
        sa.Column("conv_id", sa.String(64), nullable=False),
        sa.Column("seq", sa.BigInteger, autoincrement=False, nullable=False),
        sa.Column("version", sa.Integer, autoincrement=False, nullable=False),
        sa.Column("action", sa.String(8), nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("at_us", sa.BigInteger, nullable=False),
        sa.Column("body", sa.LargeBinary),
        sa.PrimaryKeyConstraint("conv_id", "seq", "version", name="pk_chat_message_version"),
    )


def downgrade() -> None:
    op.drop_table("chat_message_version")
    op.drop_table("chat_message")
    op.drop_index("ix_chat_member_user_id", table_name="chat_member")
    op.drop_table("chat_member")
    op.drop_table("chat_conversation")
