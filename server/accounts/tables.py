"""Accounts tables (SQLAlchemy Core on the shared metadata); migrations 0002, 0004, 0005, 0009.

Times are UTC microseconds since the epoch (``*_us``). Ids are pseudonymous
strings (``o-``, ``u-``, ``s-`` + hex), safe for logs and the audit trail.
Secrets are never stored in clear: passwords as Argon2id PHC strings, session
tokens, invitation tokens and recovery codes as SHA-256 digests, TOTP secrets
as AES-GCM envelopes (:mod:`server.security.crypto`) bound to the user row.
Identity data is never stored in clear either: users' name, email and phone
are AES-GCM envelopes under the at-rest key (AAD ``users.<column>.<id>``), and
email lookups go through ``email_index``, an HMAC blind index of the normalised
email (:mod:`server.security.at_rest`). Every create and change of a user
writes a ``user_versions`` row (who, when, what, an encrypted snapshot); every
grant and revocation of a delegation a ``delegation_versions`` row (who, when,
the whole delegation: pseudonymous ids and scope names only, so in clear).
Version rows are only ever inserted, in the transaction of the change.
"""

from __future__ import annotations

import sqlalchemy as sa

from server.store.schema import metadata

orgs = sa.Table(
    "orgs",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("disabled", sa.Boolean, nullable=False, default=False),
    sa.Column("created_us", sa.BigInteger, nullable=False),
)

users = sa.Table(
    "users",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("org_id", sa.String(40), sa.ForeignKey("orgs.id"), nullable=False),
    sa.Column("role", sa.String(32), nullable=False),
    sa.Column("name_enc", sa.LargeBinary, nullable=False),  # envelope
    sa.Column("email_enc", sa.LargeBinary, nullable=False),  # envelope
    sa.Column("phone_enc", sa.LargeBinary, nullable=False),  # envelope
    sa.Column("email_index", sa.LargeBinary(32), nullable=False, unique=True),  # blind index
    sa.Column("status", sa.String(16), nullable=False),  # invited | active | disabled
    sa.Column("password_hash", sa.String(256)),
    sa.Column("password_changed_us", sa.BigInteger),
    sa.Column("totp_secret", sa.LargeBinary(256)),  # envelope, AAD users.totp_secret.<id>
    sa.Column("totp_pending", sa.LargeBinary(256)),  # enrolment not yet confirmed
    sa.Column("totp_last_step", sa.BigInteger, nullable=False, default=-1),
    sa.Column("expires_us", sa.BigInteger),  # guest accounts
    sa.Column("created_us", sa.BigInteger, nullable=False),
    sa.Column("version", sa.Integer, nullable=False, default=1),
    sa.Index(None, "org_id"),
)

user_versions = sa.Table(
    "user_versions",
    metadata,
    sa.Column("user_id", sa.String(40), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("action", sa.String(16), nullable=False),  # create | update | delete
    sa.Column("changed_by", sa.String(40)),  # user id; None: the system or the CLI
    sa.Column("changed_us", sa.BigInteger, nullable=False),
    sa.Column("fields", sa.String(400), nullable=False),  # comma-separated column names
    sa.Column("snapshot", sa.LargeBinary, nullable=False),  # envelope of msgpack {field: value}
)

invitations = sa.Table(
    "invitations",
    metadata,
    sa.Column("token_hash", sa.LargeBinary(32), primary_key=True),
    sa.Column("user_id", sa.String(40), sa.ForeignKey("users.id"), nullable=False),
    sa.Column("expires_us", sa.BigInteger, nullable=False),
    sa.Column("used_us", sa.BigInteger),
)

recovery_codes = sa.Table(
    "recovery_codes",
    metadata,
    sa.Column("code_hash", sa.LargeBinary(32), primary_key=True),
    sa.Column("user_id", sa.String(40), sa.ForeignKey("users.id"), nullable=False),
    sa.Column("used_us", sa.BigInteger),
    sa.Index(None, "user_id"),
)

sessions = sa.Table(
    "sessions",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("token_hash", sa.LargeBinary(32), nullable=False, unique=True),
    sa.Column("user_id", sa.String(40), sa.ForeignKey("users.id"), nullable=False),
    sa.Column("created_us", sa.BigInteger, nullable=False),
    sa.Column("last_seen_us", sa.BigInteger, nullable=False),
    sa.Column("expires_us", sa.BigInteger, nullable=False),  # absolute timeout
    sa.Column("auth_us", sa.BigInteger, nullable=False),  # last password + TOTP
    sa.Column("restricted", sa.String(32)),  # "password_expired": change it first
    sa.Column("source", sa.String(64)),
    sa.Column("revoked_us", sa.BigInteger),
    sa.Index(None, "user_id"),
)

delegations = sa.Table(
    "delegations",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("org_id", sa.String(40), sa.ForeignKey("orgs.id"), nullable=False),
    sa.Column("practitioner_id", sa.String(40), sa.ForeignKey("users.id"), nullable=False),
    sa.Column("delegate_id", sa.String(40), sa.ForeignKey("users.id"), nullable=False),
    sa.Column("scopes", sa.String(200), nullable=False),  # comma-separated scope names
    sa.Column("created_us", sa.BigInteger, nullable=False),
    sa.Column("revoked_us", sa.BigInteger),
    sa.Index(None, "delegate_id"),
)

#: One immutable row per grant or revocation of a delegation, in its transaction:
#: the delegation as it became (``action`` ``grant`` | ``revoke``; ``baseline``
#: for the delegations that existed before migration 0009, by nobody known).
delegation_versions = sa.Table(
    "delegation_versions",
    metadata,
    sa.Column("delegation_id", sa.String(40), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("action", sa.String(16), nullable=False),
    sa.Column("changed_by", sa.String(40)),  # user id; None: the system or the CLI
    sa.Column("changed_us", sa.BigInteger, nullable=False),
    sa.Column("org_id", sa.String(40), nullable=False),
    sa.Column("practitioner_id", sa.String(40), nullable=False),
    sa.Column("delegate_id", sa.String(40), nullable=False),
    sa.Column("scopes", sa.String(200), nullable=False),
    sa.Column("revoked_us", sa.BigInteger),
)

care_relationships = sa.Table(
    "care_relationships",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("org_id", sa.String(40), sa.ForeignKey("orgs.id"), nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),  # server.policy.RelationKind
    sa.Column("actor_id", sa.String(40), sa.ForeignKey("users.id"), nullable=False),
    sa.Column("patient_id", sa.String(40), sa.ForeignKey("users.id"), nullable=False),
    sa.Column("ref_id", sa.String(64)),  # consultation or EEG exam id
    sa.Column("created_us", sa.BigInteger, nullable=False),
    sa.Column("ended_us", sa.BigInteger),
    sa.Index(None, "actor_id"),
    sa.Index(None, "patient_id"),
)

#: One row per change of someone's access: a session revoked, a user's rights
#: changed (role, status, delegation, care relationship) or profile changed.
#: Written in the transaction of the change; every node polls it (in ``seq``
#: order) to drop cached credentials and close sockets, so no change depends
#: on one pub/sub message. Pruned after a day (server/accounts/access_log.py).
access_changes = sa.Table(
    "access_changes",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at_us", sa.BigInteger, nullable=False, index=True),
    sa.Column("user_id", sa.String(40), nullable=False),
    sa.Column("session_id", sa.String(40)),
    sa.Column("kind", sa.String(16), nullable=False),
)
