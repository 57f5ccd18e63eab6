"""The echo capability: every seam a real capability uses, in a few lines."""

from __future__ import annotations

import argparse
from typing import Any, ClassVar, Self

from protocol.errors import ErrorCode
from protocol.messages import ClientMessage, Event
from protocol.streams import StreamKind, encode_stream
from server.capability import Capability, Node
from server.channels import ChannelClass, ChannelService, encode_event
from server.peer import Peer
from server.router import HandlerError, RequestContext, Router, StreamContext
from server.sendqueue import Delivery
from tests.capability_echo.protocol import ECHO_STREAM, EchoNoteT, EchoSayT


class Echo(Capability):
    """Echoes requests, notes and stream frames back (see the package docstring)."""

    name: ClassVar[str] = "echo"
    message_types: ClassVar[tuple[type[ClientMessage], ...]] = (EchoSayT, EchoNoteT)
    stream_kinds: ClassVar[tuple[StreamKind, ...]] = (ECHO_STREAM,)

    def __init__(self, channels: ChannelService) -> None:
        self.channels = channels
        self.opened: list[str] = []
        channels.define(ChannelClass("echo", Delivery.COALESCE))
        channels.on_inbox("echo.note", self._on_note)

    @classmethod
    def build(cls, node: Node) -> Self:
        return cls(node.channels)

    @classmethod
    def add_commands(cls, subparsers: Any) -> None:
        p: argparse.ArgumentParser = subparsers.add_parser("echo", help="say something back")
        p.add_argument("text")
        p.set_defaults(func=lambda args, settings: print(args.text) or 0)

    def register(self, router: Router) -> None:
        router.add(EchoSayT, self.say)
        router.add_oneway(EchoNoteT, self.note)
        router.add_stream(ECHO_STREAM, self.frame)

    def connection_opened(self, peer: Peer) -> None:
        assert peer.principal is not None
        self.opened.append(peer.principal.user_id)

    def health(self) -> dict[str, bool]:
        return {"echo.ok": True}

    async def say(self, ctx: RequestContext, msg: Any) -> dict[str, Any]:
        channel = f"echo:{ctx.principal.user_id}"
        await self.channels.attach(ctx.peer, channel)
        await self.channels.publish(channel, encode_event(channel, 0, "said", msg.text))
        return {"said": msg.text}

    async def note(self, ctx: StreamContext, msg: Any) -> None:
        if not msg.to.strip():
            raise HandlerError(ErrorCode.FORBIDDEN, "nobody to note")
        self.channels.notify_users(
            [msg.to], "echo.note", {"from": ctx.principal.user_id, "text": msg.text}
        )

    def _on_note(self, user: str, peers: list[Peer], data: Any) -> None:
        for peer in peers:
            peer.send(Event(ch=f"echo:{user}", seq=0, kind="note", data=data))

    async def frame(self, ctx: StreamContext, payload: memoryview) -> None:
        ctx.peer.send_frame(encode_stream(ECHO_STREAM, bytes(payload)[::-1]), "echo")
