"""The echo capability's wire messages (a real capability keeps them in protocol/)."""

from __future__ import annotations

from typing import Annotated, ClassVar

import msgspec

from protocol.messages import CLIENT_TYPES, OneWay, Request, client_message
from protocol.streams import STREAM_KINDS, stream_kind

Text = Annotated[str, msgspec.Meta(max_length=200)]

if "echo.say" not in CLIENT_TYPES:  # a test module may be imported twice

    @client_message
    class EchoSay(Request, tag="echo.say", frozen=True):
        """Answered with ``{"said": text}``; also published on channel ``echo:<user>``."""

        text: Text
        max_bytes: ClassVar[int] = 512

    @client_message
    class EchoNote(OneWay, tag="echo.note", frozen=True):
        """No reply; sends an inbox notice to ``to`` (``forbidden`` when ``to`` is empty)."""

        to: Text
        text: Text
        max_bytes: ClassVar[int] = 512


EchoSayT = CLIENT_TYPES["echo.say"]
EchoNoteT = CLIENT_TYPES["echo.note"]
ECHO_STREAM = STREAM_KINDS.get(250) or stream_kind(250, "echo", 4096)
