"""Node channels: the one delivery service of every capability (see :mod:`.service`)."""

from server.channels.model import (
    Attachment,
    ChannelClass,
    Recovery,
    encode_event,
    send_events,
    to_json,
)
from server.channels.service import INBOX, ChannelService, InboxHandler, inbox_of

__all__ = [
    "INBOX",
    "Attachment",
    "ChannelClass",
    "ChannelService",
    "InboxHandler",
    "Recovery",
    "encode_event",
    "inbox_of",
    "send_events",
    "to_json",
]
