"""v1 presence messages: set my state, read and follow other users' states.

States, weakest to strongest: ``offline`` < ``online`` < ``away`` < ``busy`` <
``in-call``. Each device (socket) has its own state (``online`` when it
connects); a user's state is the strongest over their devices, ``offline`` (with
``last_seen``, unix milliseconds) once the last one is gone.

Changes arrive as ``event`` messages on channel ``presence:<user>`` with kind
``presence``, ``seq`` 0 (presence is not resumable: last state wins) and
``data`` = :class:`PresenceState`. A slow socket gets only the latest state of
each user (coalesced). Apply a state only when its ``ts`` is newer than the one
you hold: a snapshot and an event may cross.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Final

import msgspec

from protocol.messages import Id64, Request, client_message

STATES: Final = ("offline", "online", "away", "busy", "in-call")
#: The states a device may set (``offline`` is what disconnecting does).
SETTABLE_STATES: Final = ("online", "away", "busy", "in-call")
#: Users named in one subscribe / get request, at most.
MAX_USERS_PER_REQUEST: Final = 256
#: Users one socket may follow at once, at most (past it: ``bad_request``).
MAX_WATCHED_PER_SOCKET: Final = 1000

DeviceState = Annotated[str, msgspec.Meta(pattern=f"^({'|'.join(SETTABLE_STATES)})$")]
UserList = Annotated[list[Id64], msgspec.Meta(max_length=MAX_USERS_PER_REQUEST)]


def rank(state: str) -> int:
    """Order of ``state`` in :data:`STATES` (unknown states rank as ``offline``)."""
    try:
        return STATES.index(state)
    except ValueError:
        return 0


class PresenceState(msgspec.Struct, frozen=True, omit_defaults=True):
    """One user's presence: state, last-seen (ms, when offline) and change time (ms)."""

    user: str
    state: str
    ts: int
    last_seen: int | None = None


@client_message
class PresenceSet(Request, tag="presence.set", frozen=True):
    """Set this device's state; result ``{"state": <the user's combined state>}``."""

    state: DeviceState
    max_bytes: ClassVar[int] = 256


@client_message
class PresenceSubscribe(Request, tag="presence.subscribe", frozen=True):
    """Follow ``users`` and/or (``contacts``) everyone this user may see.

    Result ``{"presence": [PresenceState...], "refused": [user...]}``: a snapshot
    of the users followed now; ``refused`` lists named users this user may not
    see (unknown users are refused the same way). Later changes arrive as events.
    """

    users: UserList = []
    contacts: bool = False
    max_bytes: ClassVar[int] = 20480


@client_message
class PresenceUnsubscribe(Request, tag="presence.unsubscribe", frozen=True):
    """Stop following ``users`` (all of them when ``users`` is empty); result ``{}``."""

    users: UserList = []
    max_bytes: ClassVar[int] = 20480


@client_message
class PresenceGet(Request, tag="presence.get", frozen=True):
    """A snapshot without following; same result as ``presence.subscribe``."""

    users: UserList = []
    contacts: bool = False
    max_bytes: ClassVar[int] = 20480
