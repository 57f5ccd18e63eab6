"""Chat storage: SQL for conversations, members and the per-conversation event log.

Every function is synchronous and takes an open ``Connection`` inside a
transaction (the caller owns it: ``await db.run(lambda conn: ...)``, one
hand-off per transaction) so several steps commit together. Text is sealed
with the :class:`~server.security.crypto.Keyring` under AAD
``chat_message.body.<conv>:<seq>`` (versions: ``...:<seq>:<version>``).

Sequence numbers are allocated by :func:`allocate` with ``UPDATE ... SET
last_seq = last_seq + n RETURNING last_seq`` in the transaction that inserts
the events: the row lock (PostgreSQL) or the write lock (SQLite ``BEGIN
IMMEDIATE``) serialises allocators, so committed seqs of a conversation are
always contiguous from 1 and no two nodes ever hand out the same one.

Domain outcomes are their own exceptions (:class:`ChatStoreError` and its
subclasses), never built-in ones: a body that does not open raises
``CryptoError`` (an integrity incident, never "not found" or "deleted").
Driver failures raise SQLAlchemy errors (or ``OSError``).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Dialect

from protocol.chat import ChatEvent
from server.chat.tables import chat_conversation, chat_member, chat_message, chat_message_version
from server.security.crypto import Keyring, aad
from server.store.fastsql import MultiInsert, Prepared, placeholders


class ChatStoreError(Exception):
    """A chat store outcome the caller answers with a catalogued code."""


class NoSuchConversation(ChatStoreError):
    """The conversation does not exist."""


class NotAMember(ChatStoreError):
    """The user is not a member of the conversation."""


class NoSuchMessage(ChatStoreError):
    """No message with that seq in the conversation."""


class NotTheAuthor(ChatStoreError):
    """Only a message's author may edit or delete it."""


class AlreadyDeleted(ChatStoreError):
    """The message was deleted before."""


_c = chat_conversation.c
#: Seq allocation: one row lock / write lock, compiled once.
_ALLOCATE = Prepared(
    sa.update(chat_conversation)
    .where(_c.id == sa.bindparam("conv"))
    .values(last_seq=_c.last_seq + sa.bindparam("n"))
    .returning(_c.last_seq)
)
#: New messages, many rows per statement.
_INSERT = MultiInsert(
    chat_message,
    ("conv_id", "seq", "kind", "sender", "client_msg_id", "created_us", "body", "record_ref",
     "target_seq", "version", "edited_us", "deleted_us"),
)  # fmt: skip

#: Client ids looked up per duplicate-check query.
_KEYS_PER_QUERY = 500


def now_us() -> int:
    """The current UTC time in microseconds since the epoch."""
    return time.time_ns() // 1000


def _aad(conv: str, seq: int, version: int | None = None) -> bytes:
    row = f"{conv}:{seq}" if version is None else f"{conv}:{seq}:{version}"
    return aad("chat_message", "body", row)


@dataclass(frozen=True, slots=True)
class Conversation:
    """A conversation row (title already opened)."""

    id: str
    kind: str
    org: str
    title: str | None
    consultation_id: str | None
    patient_id: str | None
    last_seq: int


@dataclass(frozen=True, slots=True)
class Member:
    """One membership row."""

    user_id: str
    role: str
    delivered_seq: int
    read_seq: int


# -- conversations -------------------------------------------------------------------
def conversation(conn: Connection, keys: Keyring, conv: str) -> Conversation | None:
    """The conversation ``conv``, or None."""
    row = (conn.execute(sa.select(chat_conversation).where(chat_conversation.c.id == conv))).first()
    return None if row is None else _conv(keys, row)


def last_seqs(conn: Connection, convs: Sequence[str]) -> dict[str, int]:
    """The last seq of each existing conversation among ``convs`` (one query)."""
    if not convs:
        return {}
    c = chat_conversation.c
    rows = conn.execute(sa.select(c.id, c.last_seq).where(c.id.in_(list(convs))))
    return {str(r.id): int(r.last_seq) for r in rows}


def _conv(keys: Keyring, row: sa.Row[object]) -> Conversation:
    m = row._mapping
    title = m["title"]
    opened = (
        None
        if title is None
        else keys.open(title, aad("chat_conversation", "title", m["id"])).decode()
    )
    return Conversation(
        m["id"],
        m["kind"],
        m["org"],
        opened,
        m["consultation_id"],
        m["patient_id"],
        int(m["last_seq"]),
    )


def find_conversation(
    conn: Connection, *, direct_key: str | None = None, consultation_id: str | None = None
) -> str | None:
    """The id of the direct conversation of a pair, or of a consultation's; None."""
    c = chat_conversation.c
    where = (
        c.direct_key == direct_key
        if direct_key is not None
        else c.consultation_id == consultation_id
    )
    return (conn.execute(sa.select(c.id).where(where))).scalar()


def create_conversation(
    conn: Connection,
    keys: Keyring,
    *,
    conv: str,
    kind: str,
    org: str,
    created_by: str,
    members: dict[str, str],
    title: str | None = None,
    consultation_id: str | None = None,
    patient_id: str | None = None,
    direct_key: str | None = None,
) -> None:
    """Insert a conversation and its ``members`` (user id -> role)."""
    at = now_us()
    sealed = (
        None
        if title is None
        else keys.seal(title.encode(), aad("chat_conversation", "title", conv))
    )
    conn.execute(
        sa.insert(chat_conversation).values(
            id=conv, kind=kind, org=org, title=sealed, consultation_id=consultation_id,
            patient_id=patient_id, direct_key=direct_key, last_seq=0, created_by=created_by,
            created_us=at,
        )
    )  # fmt: skip
    conn.execute(
        sa.insert(chat_member),
        [
            {"conv_id": conv, "user_id": u, "role": r, "delivered_seq": 0, "read_seq": 0,
             "joined_us": at}
            for u, r in members.items()
        ],
    )  # fmt: skip


def member(conn: Connection, conv: str, user: str) -> Member | None:
    """``user``'s membership of ``conv``, or None."""
    c = chat_member.c
    row = (conn.execute(sa.select(chat_member).where(c.conv_id == conv, c.user_id == user))).first()
    if row is None:
        return None
    return Member(row.user_id, row.role, int(row.delivered_seq), int(row.read_seq))


def members(conn: Connection, conv: str) -> list[Member]:
    """Every member of ``conv``."""
    rows = conn.execute(sa.select(chat_member).where(chat_member.c.conv_id == conv))
    return [Member(r.user_id, r.role, int(r.delivered_seq), int(r.read_seq)) for r in rows]


@dataclass(frozen=True, slots=True)
class Listed:
    """One conversation of a user's list: the conversation, their membership, the others."""

    conversation: Conversation
    me: Member
    unread: int
    members: list[str]


def conversations_of(
    conn: Connection, keys: Keyring, user: str, *, after: str | None = None, limit: int = 100
) -> tuple[list[Listed], bool]:
    """A page of ``user``'s conversations by id (after ``after``), and whether more follow.

    Three queries whatever the page size (conversations, members, unread
    counts), never one per conversation.
    """
    m, c, msg = chat_member.c, chat_conversation.c, chat_message.c
    query = (
        sa.select(chat_conversation, m.role, m.delivered_seq, m.read_seq)
        .join(chat_member, m.conv_id == c.id)
        .where(m.user_id == user)
        .order_by(c.id)
        .limit(limit + 1)
    )
    if after is not None:
        query = query.where(c.id > after)
    rows = conn.execute(query).all()
    more = len(rows) > limit
    rows = rows[:limit]
    ids = [r.id for r in rows]
    if not ids:
        return [], False
    members: dict[str, list[str]] = {}
    for r in conn.execute(
        sa.select(m.conv_id, m.user_id).where(m.conv_id.in_(ids)).order_by(m.conv_id, m.user_id)
    ):
        members.setdefault(r.conv_id, []).append(r.user_id)
    me = chat_member.alias("me")
    unread_q = (
        sa.select(msg.conv_id, sa.func.count().label("n"))
        .join(me, sa.and_(me.c.conv_id == msg.conv_id, me.c.user_id == user))
        .where(
            msg.conv_id.in_(ids), msg.seq > me.c.read_seq, msg.kind == "message",
            msg.sender != user, msg.deleted_us.is_(None),
        )
        .group_by(msg.conv_id)
    )  # fmt: skip
    unread = {r.conv_id: int(r.n) for r in conn.execute(unread_q)}
    return [
        Listed(
            _conv(keys, r),
            Member(user, r.role, int(r.delivered_seq), int(r.read_seq)),
            unread.get(r.id, 0),
            members.get(r.id, []),
        )
        for r in rows
    ], more


def advance_receipt(conn: Connection, conv: str, user: str, kind: str, seq: int) -> Member:
    """Move ``user``'s ``delivered`` or ``read`` position forward to ``seq`` (never back,
    never past the conversation's last seq).

    Reading implies delivery. Raises :class:`NotAMember`.
    """
    last = (
        conn.execute(sa.select(chat_conversation.c.last_seq).where(chat_conversation.c.id == conv))
    ).scalar()
    seq = min(seq, int(last or 0))
    c = chat_member.c
    row = (conn.execute(sa.select(chat_member).where(c.conv_id == conv, c.user_id == user))).first()
    if row is None:
        raise NotAMember(conv)
    delivered, read = int(row.delivered_seq), int(row.read_seq)
    delivered = max(delivered, seq)
    if kind == "read":
        read = max(read, seq)
    conn.execute(
        sa.update(chat_member)
        .where(c.conv_id == conv, c.user_id == user)
        .values(delivered_seq=delivered, read_seq=read)
    )
    return Member(user, row.role, delivered, read)


# -- the event log ---------------------------------------------------------------------
def allocate(conn: Connection, conv: str, count: int) -> int:
    """Reserve ``count`` seqs of ``conv``; returns the first (raises NoSuchConversation)."""
    last = _ALLOCATE.execute(conn, {"conv": conv, "n": count}).scalar()
    if last is None:
        raise NoSuchConversation(conv)
    return int(last) - count + 1


_existing_sql: dict[tuple[str, int, int], str] = {}


def _existing(dialect: Dialect, senders: int, ids: int) -> str:
    """The duplicate lookup of one conversation, for so many senders and ids (cached)."""
    key = (dialect.name, senders, ids)
    sql = _existing_sql.get(key)
    if sql is None:
        marks = placeholders(dialect, 1 + senders + ids)
        sql = _existing_sql[key] = (  # placeholders only: every value is bound
            "SELECT sender, client_msg_id, seq FROM chat_message WHERE conv_id = "  # noqa: S608
            f"{marks[0]} AND sender IN ({', '.join(marks[1 : 1 + senders])}) "
            f"AND client_msg_id IN ({', '.join(marks[1 + senders :])})"
        )
    return sql


def existing_ids(
    conn: Connection, keys: Iterable[tuple[str, str, str]]
) -> dict[tuple[str, str, str], int]:
    """Seqs of already stored (conv, sender, client_msg_id) keys among ``keys``.

    One query per conversation of the batch, probing the unique
    (conv_id, sender, client_msg_id) index for each (sender, id) pair: the
    cost does not grow with the history.
    """
    wanted = set(keys)
    groups: dict[str, tuple[set[str], set[str]]] = {}
    for conv, sender, cid in wanted:
        senders, ids = groups.setdefault(conv, (set(), set()))
        senders.add(sender)
        ids.add(cid)
    found: dict[tuple[str, str, str], int] = {}
    for conv, (senders, ids) in groups.items():
        who, id_list = sorted(senders), sorted(ids)
        for i in range(0, len(id_list), _KEYS_PER_QUERY):
            chunk = id_list[i : i + _KEYS_PER_QUERY]
            sql = _existing(conn.dialect, len(who), len(chunk))
            for sender, cid, seq in conn.exec_driver_sql(sql, (conv, *who, *chunk)):
                key = (conv, sender, cid)
                if key in wanted:  # the cross product may match another sender's id
                    found[key] = int(seq)
    return found


@dataclass(frozen=True, slots=True)
class NewMessage:
    """A message to insert at ``seq``."""

    conv: str
    seq: int
    sender: str
    client_msg_id: str
    text: str
    record: str | None
    at_us: int


def insert_messages(conn: Connection, keys: Keyring, rows: Sequence[NewMessage]) -> None:
    """Insert ``rows`` (kind ``message``, version 1), sealing each text: one statement."""
    if not rows:
        return
    _INSERT.execute(
        conn,
        [
            (m.conv, m.seq, "message", m.sender, m.client_msg_id, m.at_us,
             keys.seal(m.text.encode(), _aad(m.conv, m.seq)), m.record, None, 1, None, None)
            for m in rows
        ],
    )  # fmt: skip


def change_message(
    conn: Connection,
    keys: Keyring,
    *,
    conv: str,
    target: int,
    actor: str,
    client_msg_id: str,
    text: str | None,
) -> ChatEvent:
    """Edit (``text`` given) or delete (``text`` None) message ``target`` of ``actor``.

    Keeps the previous text as a version row, updates the message and appends
    an ``edit`` / ``delete`` event at the next seq, which is returned. A retry
    with the same ``client_msg_id`` returns the stored event. Raises
    :class:`NoSuchMessage`, :class:`NotTheAuthor` or :class:`AlreadyDeleted`.
    """
    kind = "edit" if text is not None else "delete"
    c = chat_message.c
    again = (existing_ids(conn, [(conv, actor, client_msg_id)])).get((conv, actor, client_msg_id))
    if again is not None:
        return (events(conn, keys, conv, after=again - 1, limit=1))[0]
    row = (conn.execute(sa.select(chat_message).where(c.conv_id == conv, c.seq == target))).first()
    if row is None or row.kind != "message":
        raise NoSuchMessage(f"{conv}.{target}")
    if row.sender != actor:
        raise NotTheAuthor(f"{conv}.{target}")
    if row.deleted_us is not None:
        raise AlreadyDeleted(f"{conv}.{target}")
    at = now_us()
    old_body = None
    if row.body is not None:
        old_body = keys.seal(
            keys.open(row.body, _aad(conv, target)), _aad(conv, target, row.version)
        )
    conn.execute(
        sa.insert(chat_message_version).values(
            conv_id=conv, seq=target, version=row.version, action=kind, actor=actor, at_us=at,
            body=old_body,
        )
    )  # fmt: skip
    version = int(row.version) + (1 if text is not None else 0)
    values: dict[str, object] = {"version": version}
    if text is not None:
        values.update(body=keys.seal(text.encode(), _aad(conv, target)), edited_us=at)
    else:
        values.update(body=None, deleted_us=at)
    conn.execute(sa.update(chat_message).where(c.conv_id == conv, c.seq == target).values(**values))
    seq = allocate(conn, conv, 1)
    body = None if text is None else keys.seal(text.encode(), _aad(conv, seq))
    conn.execute(
        sa.insert(chat_message).values(
            conv_id=conv, seq=seq, kind=kind, sender=actor, client_msg_id=client_msg_id,
            created_us=at, body=body, record_ref=None, target_seq=target, version=version,
        )
    )  # fmt: skip
    return ChatEvent(
        seq=seq, kind=kind, sender=actor, client_msg_id=client_msg_id, at=at // 1000,
        text=text, target=target, version=version,
    )  # fmt: skip


def events(
    conn: Connection,
    keys: Keyring,
    conv: str,
    *,
    after: int | None = None,
    before: int | None = None,
    limit: int = 100,
) -> list[ChatEvent]:
    """Up to ``limit`` events in ascending seq: the first ones after ``after``, or the
    last ones before ``before`` (the newest ones when both are None)."""
    c = chat_message.c
    query = sa.select(chat_message).where(c.conv_id == conv)
    if after is not None:
        query = query.where(c.seq > after).order_by(c.seq).limit(limit)
    else:
        if before is not None:
            query = query.where(c.seq < before)
        query = query.order_by(c.seq.desc()).limit(limit)
    rows = list((conn.execute(query)).all())
    if after is None:
        rows.reverse()
    return [_event(keys, conv, r) for r in rows]


def _ms(us: object) -> int | None:
    return None if us is None else int(us) // 1000  # type: ignore[call-overload]


def _event(keys: Keyring, conv: str, r: sa.Row[object]) -> ChatEvent:
    m = r._mapping
    seq = int(m["seq"])
    text = None if m["body"] is None else keys.open(m["body"], _aad(conv, seq)).decode()
    return ChatEvent(
        seq=seq, kind=m["kind"], sender=m["sender"], client_msg_id=m["client_msg_id"],
        at=int(m["created_us"]) // 1000, text=text, record=m["record_ref"],
        target=m["target_seq"], version=int(m["version"]), edited_at=_ms(m["edited_us"]),
        deleted_at=_ms(m["deleted_us"]),
    )  # fmt: skip


def versions(conn: Connection, keys: Keyring, conv: str, seq: int) -> list[dict[str, object]]:
    """Earlier versions of message ``seq``, oldest first (text None for a deleted body)."""
    c = chat_message_version.c
    rows = conn.execute(
        sa.select(chat_message_version).where(c.conv_id == conv, c.seq == seq).order_by(c.version)
    )
    out: list[dict[str, object]] = []
    for r in rows:
        text = None if r.body is None else keys.open(r.body, _aad(conv, seq, r.version)).decode()
        out.append(
            {
                "version": r.version,
                "action": r.action,
                "by": r.actor,
                "at": r.at_us // 1000,
                "text": text,
            }
        )
    return out
