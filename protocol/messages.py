"""v1 core messages: the handshake, request/reply, events, heartbeats, errors.

Every message is a map with a ``type`` field. Client messages that expect an
answer carry an ``id`` (a string of at most 64 characters, or an integer in
[0, 2**53)), echoed in the ``result`` or ``error`` that answers them.

Types are msgspec Structs: validation (types, bounds, unknown fields refused)
happens in one C pass, and the same class encodes to msgpack and JSON.
Capabilities add their request types with :func:`client_message` in their own
``protocol/`` module; :data:`CLIENT_TYPES` is the registry the decoder uses.

Each client type has ``max_bytes`` (the largest encoded frame accepted for it,
in bytes); a larger frame is answered with ``too_large``.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, TypeVar

import msgspec

# -- shared field types --------------------------------------------------------
#: A request id: a string of 1 to 64 characters, or an integer in [0, 2**53).
RequestId = (
    Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    | Annotated[int, msgspec.Meta(ge=0, lt=2**53)]
)
#: Pattern of every entity id on the wire (users, conversations, consultations):
#: the pseudonymous ids the audit trail accepts, so a bad id is a ``bad_request``.
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$"
Id64 = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=ID_PATTERN)]
Token = Annotated[str, msgspec.Meta(min_length=16, max_length=512)]
Channel = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
Seq = Annotated[int, msgspec.Meta(ge=0, lt=2**53)]

DEFAULT_MAX_BYTES = 4096


class ClientMessage(msgspec.Struct, tag_field="type", forbid_unknown_fields=True, frozen=True):
    """Base of every client-to-server message."""

    max_bytes: ClassVar[int] = DEFAULT_MAX_BYTES


class Request(ClientMessage, frozen=True):
    """A client message that gets exactly one ``result`` or ``error``."""

    id: RequestId


class OneWay(ClientMessage, frozen=True):
    """A client message that gets no reply (typing indicators, acknowledgements).

    It has no ``id``. When the hub cannot handle it (no capability serves the
    type, the capability refuses it), it answers an ``error`` with no ``id``
    and ``ref`` = the message type, so nothing is ever dropped silently.
    """


class ServerMessage(msgspec.Struct, tag_field="type", omit_defaults=True, frozen=True):
    """Base of every server-to-client message."""


C = TypeVar("C", bound=type[ClientMessage])

#: type name -> class, for every client message of v1.
CLIENT_TYPES: dict[str, type[ClientMessage]] = {}


def client_message(cls: C) -> C:
    """Class decorator: register a client message type under its tag.

    Raises ``ValueError`` when the tag is already registered.
    """
    tag = msgspec.inspect.type_info(cls).tag  # type: ignore[attr-defined]
    if not isinstance(tag, str) or tag in CLIENT_TYPES:
        raise ValueError(f"duplicate or missing message tag: {tag!r}")
    CLIENT_TYPES[tag] = cls
    return cls


# -- handshake -------------------------------------------------------------------
class Auth(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Credentials in ``hello``.

    ``method`` is ``ticket`` (a single-use ticket from the accounts API),
    ``token`` (a bearer session token, for API clients), or ``cookie`` (the
    browser session cookie sent with the upgrade request; ``token`` omitted).
    """

    method: Annotated[str, msgspec.Meta(pattern="^(ticket|token|cookie)$")]
    token: Token | None = None


class Resume(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Last sequence number seen per channel, from a previous connection.

    ``epochs`` (optional) gives the epoch each ``seq`` belongs to, as received
    in events; a channel whose epoch changed answers with a reload hint
    instead of a replay (the numbering restarted).
    """

    channels: Annotated[dict[Channel, Seq], msgspec.Meta(max_length=256)] = {}
    epochs: Annotated[
        dict[Channel, Annotated[str, msgspec.Meta(max_length=64)]], msgspec.Meta(max_length=256)
    ] = {}


@client_message
class Hello(Request, tag="hello", frozen=True):
    """First message on every socket, within the handshake deadline."""

    auth: Auth
    client: Annotated[str, msgspec.Meta(max_length=64)] | None = None
    resume: Resume | None = None
    max_bytes: ClassVar[int] = 16384


@client_message
class Ping(Request, tag="ping", frozen=True):
    """Round-trip probe; answered with ``result`` ``{"time": <unix seconds>}``."""

    max_bytes: ClassVar[int] = 256


@client_message
class Heartbeat(ClientMessage, tag="heartbeat", frozen=True):
    """Keeps a quiet socket alive; the answer to the server's ``heartbeat``."""

    max_bytes: ClassVar[int] = 64


# -- server messages ---------------------------------------------------------------
class Limits(msgspec.Struct, frozen=True, omit_defaults=True):
    """Limits the client must respect, announced in ``welcome``."""

    max_frame_bytes: int
    rate_per_s: float
    rate_burst: int
    send_queue_max_messages: int
    #: Stream frames (protocol/streams.py): their own budget, separate from messages.
    stream_rate_per_s: float | None = None
    stream_rate_burst: int | None = None


class Identity(msgspec.Struct, frozen=True, omit_defaults=True):
    """Who the socket is authenticated as (pseudonymous ids only)."""

    user: str
    role: str
    org: str
    acting_for: str | None = None


class Welcome(ServerMessage, tag="welcome", frozen=True):
    """Answer to a good ``hello``."""

    id: RequestId
    session: str
    node: str
    protocol: int
    heartbeat_s: float
    idle_timeout_s: float
    limits: Limits
    identity: Identity


class Result(ServerMessage, tag="result", frozen=True):
    """The successful answer to request ``id``."""

    id: RequestId
    data: Any = None


class Error(ServerMessage, tag="error", frozen=True):
    """The failed answer to request ``id`` (None when the id was unreadable)."""

    code: str
    message: str
    id: RequestId | None = None
    retry_after_s: float | None = None
    #: What a reply-less input was: a one-way message type, or ``stream:<kind>``.
    ref: str | None = None


class Event(ServerMessage, tag="event", frozen=True):
    """A server event on channel ``ch`` with its per-channel sequence number."""

    ch: str
    seq: int
    kind: str
    data: Any = None
    epoch: str | None = None


class ServerHeartbeat(ServerMessage, tag="heartbeat", frozen=True):
    """Sent on a quiet socket; the client answers with its own ``heartbeat``."""


class GoingAway(ServerMessage, tag="going_away", frozen=True):
    """The node is stopping: reconnect (to any node) after ``retry_after_s``."""

    retry_after_s: float
    reason: str = "shutdown"


SERVER_TYPES: dict[str, type[ServerMessage]] = {
    "welcome": Welcome,
    "result": Result,
    "error": Error,
    "event": Event,
    "heartbeat": ServerHeartbeat,
    "going_away": GoingAway,
}
