"""v1 chat messages: conversations, messages, history, resume, receipts, typing.

A conversation ``<conv>`` is channel ``conv:<conv>``. Every persisted change
(a message, an edit, a delete) gets the conversation's next sequence number
(``seq``, from 1, no gaps) and is sent to the members that follow the
conversation as an ``event`` with that ``seq`` and kind ``message``, ``edit``
or ``delete`` (``data`` = :class:`ChatEvent`). Ephemeral events (kinds
``typing`` and ``receipt``) carry ``seq`` 0: they are not part of the sequence
and are never replayed.

A socket follows a conversation after ``chat.sync`` (or ``chat.create``) on it;
``chat.sync`` first replays what the socket missed, then live events follow
with no gap and no duplicate. Limits: :data:`MAX_TEXT_CHARS` characters of
text (past it: ``bad_request``), :data:`MAX_PAGE` events per page.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Final

import msgspec

from protocol.messages import Id64, Request, Seq, client_message

#: Characters of text in one message, at most.
MAX_TEXT_CHARS: Final = 4000
#: Events in one history page or one sync step, at most.
MAX_PAGE: Final = 500
#: Members named when creating a group, at most.
MAX_MEMBERS: Final = 256

ConvId = Id64
ClientMsgId = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
Text = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_TEXT_CHARS)]
RecordRef = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
PageSize = Annotated[int, msgspec.Meta(ge=1, le=MAX_PAGE)]
PositiveSeq = Annotated[int, msgspec.Meta(ge=1, lt=2**53)]

_TEXT_FRAME_BYTES = MAX_TEXT_CHARS * 4 + 1024


def channel_of(conv: str) -> str:
    """The channel name of conversation ``conv``."""
    return f"conv:{conv}"


class ChatEvent(msgspec.Struct, frozen=True, omit_defaults=True):
    """``data`` of a persisted chat event.

    ``kind`` ``message``: ``text`` (``None`` once deleted), ``record``,
    ``version`` (1, +1 per edit), ``edited_at`` / ``deleted_at``.
    ``edit``: ``target`` (the seq of the message), new ``text``, ``version``.
    ``delete``: ``target``. ``at`` is unix milliseconds, ``sender`` the author
    of this event, ``client_msg_id`` the id it was sent with.
    """

    seq: int
    kind: str
    sender: str
    client_msg_id: str
    at: int
    text: str | None = None
    record: str | None = None
    target: int | None = None
    version: int | None = None
    edited_at: int | None = None
    deleted_at: int | None = None


@client_message
class ChatCreate(Request, tag="chat.create", frozen=True):
    """Create (or find) a conversation.

    ``kind`` ``direct`` (``members`` = the one other user; the same pair always
    gets the same conversation), ``group`` (staff of the caller's organisation),
    or ``consultation`` (``consultation`` id; members are its participants).
    Result ``{"conv": id, "created": bool}``; the caller's socket follows it.
    """

    kind: Annotated[str, msgspec.Meta(pattern="^(direct|group|consultation)$")]
    members: Annotated[list[Id64], msgspec.Meta(max_length=MAX_MEMBERS)] = []
    title: Annotated[str, msgspec.Meta(max_length=200)] | None = None
    consultation: Id64 | None = None
    max_bytes: ClassVar[int] = 20480


@client_message
class ChatList(Request, tag="chat.list", frozen=True):
    """A page of the caller's conversations (by id) with ``last_seq``, ``read_seq``, ``unread``.

    ``after``: the ``next`` of the previous page; ``limit``: conversations per page.
    The result has ``more`` and, when true, ``next``.
    """

    after: ConvId | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=MAX_PAGE)] = 100
    max_bytes: ClassVar[int] = 512


@client_message
class ChatSend(Request, tag="chat.send", frozen=True):
    """Send a message; result ``{"seq": n, "duplicate": bool}`` once it is committed.

    Retrying with the same ``client_msg_id`` never duplicates: it answers the
    original ``seq`` with ``duplicate`` true.
    """

    conv: ConvId
    client_msg_id: ClientMsgId
    text: Text
    record: RecordRef | None = None
    max_bytes: ClassVar[int] = _TEXT_FRAME_BYTES


@client_message
class ChatEdit(Request, tag="chat.edit", frozen=True):
    """Replace the text of my message ``seq``; result ``{"seq": n, "version": v}``."""

    conv: ConvId
    seq: PositiveSeq
    client_msg_id: ClientMsgId
    text: Text
    max_bytes: ClassVar[int] = _TEXT_FRAME_BYTES


@client_message
class ChatDelete(Request, tag="chat.delete", frozen=True):
    """Delete my message ``seq`` (its versions are kept); result ``{"seq": n}``."""

    conv: ConvId
    seq: PositiveSeq
    client_msg_id: ClientMsgId
    max_bytes: ClassVar[int] = 512


@client_message
class ChatHistory(Request, tag="chat.history", frozen=True):
    """A page of events: ``before`` a seq (newest first page when both are absent)
    or ``after`` a seq. Result ``{"events": [ChatEvent...] (ascending), "more": bool}``.
    """

    conv: ConvId
    before: Seq | None = None
    after: Seq | None = None
    limit: PageSize = 50
    max_bytes: ClassVar[int] = 512


@client_message
class ChatSync(Request, tag="chat.sync", frozen=True):
    """Replay events after ``after_seq`` as ``event`` messages, then follow live.

    Result ``{"last_seq": n, "caught_up": bool}`` after the replayed events.
    When ``caught_up`` is false (more than ``limit`` events were missing) the
    socket does not follow yet: call ``chat.sync`` again with ``last_seq``.
    """

    conv: ConvId
    after_seq: Seq = 0
    limit: PageSize = 200
    max_bytes: ClassVar[int] = 512


@client_message
class ChatUnfollow(Request, tag="chat.unfollow", frozen=True):
    """Stop receiving this conversation's events on this socket; result ``{}``."""

    conv: ConvId
    max_bytes: ClassVar[int] = 256


@client_message
class ChatReceipt(Request, tag="chat.receipt", frozen=True):
    """Mark events up to ``seq`` as ``delivered`` or ``read`` (never moves back).

    Result ``{"delivered_seq": n, "read_seq": n}``; members following get a
    ``receipt`` event ``{"user", "delivered_seq", "read_seq"}``.
    """

    conv: ConvId
    seq: Seq
    kind: Annotated[str, msgspec.Meta(pattern="^(delivered|read)$")] = "read"
    max_bytes: ClassVar[int] = 256


@client_message
class ChatTyping(Request, tag="chat.typing", frozen=True):
    """Tell followers I am typing; result ``{"forwarded": bool}``.

    At most one is forwarded per user and conversation per
    ``TYPING_INTERVAL_S``; the others answer ``forwarded`` false.
    """

    conv: ConvId
    max_bytes: ClassVar[int] = 256


@client_message
class ChatVersions(Request, tag="chat.versions", frozen=True):
    """Earlier versions of message ``seq``: ``{"versions": [{version, action, by, at, text}]}``."""

    conv: ConvId
    seq: PositiveSeq
    max_bytes: ClassVar[int] = 256


#: Seconds between two forwarded typing indicators of one user in one conversation.
TYPING_INTERVAL_S: Final = 2.0
