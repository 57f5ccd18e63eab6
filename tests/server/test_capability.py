"""The capability seam: a new capability is one package plus one line in the composition list."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, ClassVar, Self

import pytest

from protocol.messages import ClientMessage
from protocol.streams import encode_stream
from server.app import CAPABILITIES, build_components
from server.capability import Capability, CapabilityError, Node, add_capability_commands
from server.router import Router
from tests.capability_echo.capability import Echo
from tests.capability_echo.protocol import ECHO_STREAM, EchoSayT
from tests.hubtest import client, hub_settings, principal, run_hub

WITH_ECHO = [*CAPABILITIES, Echo]  # the one line


async def test_a_new_capability_serves_requests_one_way_messages_streams_and_inboxes(
    tmp_path: Path,
) -> None:
    users = {u: principal(u) for u in ("alice", "bob")}
    settings = hub_settings(tmp_path)
    async with run_hub(settings, users, capabilities=WITH_ECHO) as hub:
        echo = hub.components.capabilities.get("echo")
        async with client(hub, "alice") as alice, client(hub, "bob", binary=False) as bob:
            assert isinstance(echo, Echo)
            assert sorted(echo.opened) == ["alice", "bob"]
            await alice.send({"type": "echo.say", "id": 1, "text": "hi"})
            got = {m["type"]: m for m in [await alice.recv(), await alice.recv()]}
            assert got["result"] == {"type": "result", "id": 1, "data": {"said": "hi"}}
            event = got["event"]
            assert (event["ch"], event["kind"], event["data"]) == ("echo:alice", "said", "hi")

            # one-way: no reply; the inbox notice reaches bob's socket (JSON codec)
            await alice.send({"type": "echo.note", "to": "bob", "text": "psst"})
            note = await bob.recv_type("event")
            assert note["data"] == {"from": "alice", "text": "psst"}
            # a refused one-way message gets an error naming it, never silence
            await alice.send({"type": "echo.note", "to": " ", "text": "x"})
            err = await alice.recv_type("error")
            assert (err["code"], err["ref"], err.get("id")) == ("forbidden", "echo.note", None)

            # stream frames, binary on both subprotocols
            for peer in (alice, bob):
                await peer.ws.send(encode_stream(ECHO_STREAM, b"abc"))
                back = await peer.ws.recv()
                assert back == encode_stream(ECHO_STREAM, b"cba")
            await alice.ws.send(bytes((0xC1, 99, 0)))  # a kind nobody registered
            err = await alice.recv_type("error")
            assert (err["code"], err["ref"]) == ("unknown_type", "stream:99")
            assert (await alice.request({"type": "ping", "id": 2}))["type"] == "result"

        async with client(hub, "alice") as again:  # a new socket of alice: served too
            await again.send({"type": "echo.say", "id": 3, "text": "still here"})
            got = {m["type"]: m for m in [await again.recv(), await again.recv()]}
            assert got["result"]["data"] == {"said": "still here"}


async def test_without_the_line_the_messages_are_unknown(tmp_path: Path) -> None:
    users = {"alice": principal("alice")}
    async with run_hub(hub_settings(tmp_path), users) as hub, client(hub, "alice") as alice:
        reply = await alice.request({"type": "echo.say", "id": 1, "text": "hi"})
        assert (reply["type"], reply["code"]) == ("error", "unknown_type")
        await alice.ws.send(encode_stream(ECHO_STREAM, b"abc"))
        err = await alice.recv_type("error")
        assert (err["code"], err["ref"]) == ("unknown_type", "stream:echo")


def test_a_capability_that_declares_more_than_it_routes_is_refused(tmp_path: Path) -> None:
    class Forgetful(Echo):
        name: ClassVar[str] = "forgetful"
        message_types: ClassVar[tuple[type[ClientMessage], ...]] = (EchoSayT,)

        @classmethod
        def build(cls, node: Node) -> Self:
            return cls.__new__(cls)

        def register(self, router: Router) -> None:
            pass

    with pytest.raises(CapabilityError, match=r"echo\.say"):
        build_components(hub_settings(tmp_path), capabilities=[*CAPABILITIES, Forgetful])
    with pytest.raises(CapabilityError, match="unique"):
        build_components(hub_settings(tmp_path), capabilities=[*CAPABILITIES, CAPABILITIES[0]])


def test_capability_cli_commands_join_the_medhub_parser() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    add_capability_commands(WITH_ECHO, sub)
    args: Any = parser.parse_args(["echo", "hello"])
    assert args.command == "echo"
    assert args.func(args, None) == 0


def test_every_default_capability_declares_its_tables_and_actions() -> None:
    from server.store.schema import metadata

    for cap in CAPABILITIES:
        assert issubclass(cap, Capability)
        assert cap.name
        assert cap.message_types
        assert cap.policy_actions
        for table in cap.tables:
            assert table.name in metadata.tables  # migrations create the shared metadata
