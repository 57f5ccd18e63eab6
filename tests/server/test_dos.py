"""Connections that hold descriptors without being users: closed at a deadline, capped per
address and per node, and a client's bad UTF-8 counted instead of logged as a server error."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.http11 import Response
from websockets.typing import Subprotocol
from websockets.uri import parse_uri

from protocol.codec import SUBPROTOCOL_JSON, SUBPROTOCOL_MSGPACK
from server.config import load_settings
from server.limits import plan_descriptors, reserved_descriptors
from tests.hubtest import (
    RunningHub,
    client,
    close_code,
    hub_settings,
    principal,
    run_hub,
    token_for,
)
from tests.server.serveproc import BANNER, Child, medhub_env
from tests.services import free_port

USERS = {"alice": principal("alice"), "bob": principal("bob"), "carol": principal("carol")}
HALF_HEAD = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: 1\r\n"  # no blank line


Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def open_many(
    port: int, n: int, first_bytes: bytes = b"", source: str = "127.0.0.1"
) -> list[Stream]:
    """``n`` TCP connections from ``source``, each having sent ``first_bytes``."""
    streams: list[Stream] = []
    for start in range(0, n, 100):  # batches: the listen backlog is finite
        batch = await asyncio.gather(
            *(
                asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
                for _ in range(min(100, n - start))
            )
        )
        streams += batch
    for _, writer in streams:
        if first_bytes:
            writer.write(first_bytes)
    return streams


async def read_to_eof(streams: list[Stream], timeout: float) -> list[bytes]:
    """Everything each connection receives until the server closes it."""

    async def one(reader: asyncio.StreamReader) -> bytes:
        return await reader.read()

    return await asyncio.wait_for(asyncio.gather(*(one(r) for r, _ in streams)), timeout)


def close_all(streams: list[Stream]) -> None:
    for _, writer in streams:
        writer.close()


async def healthz(port: int, source: str = "127.0.0.1", timeout: float = 10) -> bytes:
    """The raw answer to ``GET /healthz`` from ``source`` (b"" if the server closes first)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        return await asyncio.wait_for(reader.read(), timeout)
    except ConnectionResetError:
        return b""
    finally:
        writer.close()


def closes(hub: RunningHub, reason: str) -> float:
    value = hub.components.metrics.registry.get_sample_value(
        "medhub_transport_closes_total", {"reason": reason}
    )
    return value or 0.0


async def test_silent_and_half_sent_connections_are_closed_at_the_head_deadline(
    tmp_path: Path,
) -> None:
    settings = hub_settings(tmp_path, http_head_timeout_s=1.0, max_connections_per_address=5000)
    async with run_hub(settings, USERS) as hub:
        silent = await open_many(hub.port, 1000)
        half = await open_many(hub.port, 1000, HALF_HEAD)
        try:
            # Without a deadline these stay open for ever: the wait would time out.
            got = await read_to_eof(silent + half, timeout=30)
        finally:
            close_all(silent + half)
        assert got[:1000] == [b""] * 1000  # nothing sent: closed without a word
        assert all(answer.startswith(b"HTTP/1.1 408 ") for answer in got[1000:])
        assert closes(hub, "head_timeout") == 2000
        assert (await healthz(hub.port)).startswith(b"HTTP/1.1 200 ")
        # A complete request on a kept-alive connection is not cut by the deadline.
        async with client(hub, "alice") as alice:
            assert (await alice.request({"type": "ping", "id": 1}))["type"] == "result"


async def test_connections_past_the_per_address_cap_are_refused_at_accept(
    tmp_path: Path,
) -> None:
    settings = hub_settings(tmp_path, max_connections_per_address=8, http_head_timeout_s=3.0)
    async with run_hub(settings, USERS) as hub:
        held = await open_many(hub.port, 8)
        extra = await open_many(hub.port, 4)
        try:
            # The extra ones are closed at once, long before the head deadline.
            assert await read_to_eof(extra, timeout=2.5) == [b""] * 4
            assert not any(reader.at_eof() for reader, _ in held)
            # Another address is served meanwhile; this one is not.
            assert (await healthz(hub.port, source="127.0.0.2")).startswith(b"HTTP/1.1 200 ")
            assert await healthz(hub.port) == b""
            assert not any(reader.at_eof() for reader, _ in held)
            # The held ones time out; then this address is served again.
            assert await read_to_eof(held, timeout=30) == [b""] * 8
        finally:
            close_all(held + extra)
        assert (await healthz(hub.port)).startswith(b"HTTP/1.1 200 ")
        assert closes(hub, "per_address") == 5
        assert closes(hub, "head_timeout") == 8


async def test_websockets_count_against_the_per_address_cap_until_they_close(
    tmp_path: Path,
) -> None:
    settings = hub_settings(tmp_path, max_connections_per_address=3)
    async with run_hub(settings, USERS) as hub:
        async with client(hub, "alice"), client(hub, "bob") as bob:
            async with client(hub, "carol"):
                with pytest.raises((InvalidHandshake, ConnectionClosed, OSError, EOFError)):
                    async with client(hub):
                        pass
            # carol's socket closed: its place is free again.
            async with client(hub, "carol") as carol:
                assert (await carol.request({"type": "ping", "id": 1}))["type"] == "result"
            assert (await bob.request({"type": "ping", "id": 2}))["type"] == "result"
        assert closes(hub, "per_address") == 1


@contextlib.asynccontextmanager
async def raw_websocket(
    hub: RunningHub, subprotocol: str
) -> AsyncIterator[tuple[ClientProtocol, Stream]]:
    """A WebSocket client driven by hand (websockets' sans-I/O client) over a raw stream."""
    proto = ClientProtocol(parse_uri(hub.url), subprotocols=[Subprotocol(subprotocol)])
    reader, writer = await asyncio.open_connection("127.0.0.1", hub.port)
    try:
        proto.send_request(proto.connect())
        writer.write(b"".join(proto.data_to_send()))
        while not any(isinstance(e, Response) for e in proto.events_received()):
            data = await asyncio.wait_for(reader.read(65536), 10)
            assert data, "closed during the handshake"
            proto.receive_data(data)
        assert proto.handshake_exc is None
        yield proto, (reader, writer)
    finally:
        writer.close()


async def receive_until(proto: ClientProtocol, reader: asyncio.StreamReader, done: Any) -> None:
    """Feed what the server sends to ``proto`` until ``done()`` or the connection ends."""
    while not done():
        data = await asyncio.wait_for(reader.read(65536), 10)
        if not data:
            return
        proto.receive_data(data)


async def test_invalid_utf8_closes_1007_and_is_counted_not_logged_as_an_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    bad = b'{"type": "ping", "id": "\xff\xfe"}'  # not UTF-8
    async with run_hub(hub_settings(tmp_path), USERS) as hub:
        for fragments in ([bad], [bad[:10], bad[10:]], [bad[:30], bad[30:]]):
            async with raw_websocket(hub, SUBPROTOCOL_JSON) as (proto, (reader, writer)):
                proto.send_text(fragments[0], fin=len(fragments) == 1)
                for i, rest in enumerate(fragments[1:], 2):
                    proto.send_continuation(rest, fin=i == len(fragments))
                writer.write(b"".join(proto.data_to_send()))
                await receive_until(proto, reader, lambda: proto.close_rcvd is not None)
                assert proto.close_rcvd is not None
                assert proto.close_rcvd.code == 1007
        # A valid character split between two fragments is not refused.
        async with raw_websocket(hub, SUBPROTOCOL_JSON) as (proto, (reader, writer)):
            good = '{"type": "hello", "id": "é", "auth": {"method": "token", "token": "%s"}}'
            raw = (good % token_for("alice")).encode()
            cut = raw.index("é".encode()) + 1
            proto.send_text(raw[:cut], fin=False)
            proto.send_continuation(raw[cut:], fin=True)
            writer.write(b"".join(proto.data_to_send()))
            await receive_until(proto, reader, lambda: bool(proto.events_received()))
            assert proto.close_rcvd is None
        assert closes(hub, "invalid_utf8") == 3
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert errors == []
    quiet = [r for r in caplog.records if "not UTF-8" in r.getMessage()]
    assert len(quiet) == 3
    assert all(r.levelno == logging.DEBUG and "\xff" not in r.getMessage() for r in quiet)


@pytest.mark.slow
async def test_a_full_node_answers_1013_and_never_runs_out_of_descriptors(
    tmp_path: Path,
) -> None:
    """A real process with 512 descriptors: ws_max_connections (20,000) is lowered to fit;
    sockets past it get 1013 and /healthz is still served; past the node's socket cap new
    connections are closed at accept instead of failing accept() for lack of descriptors."""
    settings = load_settings(environ={})
    plan = plan_descriptors(512, 512, 20_000, reserved_descriptors(settings))
    port = free_port()
    env = medhub_env(
        tmp_path / "var", ws_max_connections=20_000, ws_handshake_timeout_s=120,
        http_head_timeout_s=120,
    )  # fmt: skip
    child = Child(["serve", "--port", str(port)], env, nofile=(512, 512))
    url = f"ws://127.0.0.1:{port}/ws"
    try:
        child.out.wait_for(BANNER, 60)
        async with contextlib.AsyncExitStack() as stack:
            for n in range(plan.ws_max_connections):  # spread over addresses (256 per address)
                source = f"127.0.0.{2 + n // 200}"
                await stack.enter_async_context(
                    connect(url, subprotocols=[SUBPROTOCOL_MSGPACK], local_addr=(source, 0))  # type: ignore[list-item]
                )
            async with connect(
                url, subprotocols=[SUBPROTOCOL_MSGPACK], local_addr=("127.0.0.50", 0)
            ) as ws:  # type: ignore[list-item]
                with pytest.raises(ConnectionClosed) as info:
                    await asyncio.wait_for(ws.recv(), 10)
                assert close_code(info) == 1013
            assert (await healthz(port, source="127.0.0.51")).startswith(b"HTTP/1.1 200 ")
            # Fill what is left of the node's sockets, and more: the extra are closed at once.
            room = plan.max_sockets - plan.ws_max_connections
            silent = await open_many(port, room + 50, source="127.0.0.60")
            try:
                # The head deadline is 120 s: an end within 10 s is the socket cap's doing.
                assert await read_to_eof(silent[-40:], timeout=10) == [b""] * 40
                assert not any(reader.at_eof() for reader, _ in silent[: room - 5])
                assert child.proc.poll() is None
            finally:
                close_all(silent)
        # Everything closed by the clients: the node serves again.
        assert (await healthz(port, source="127.0.0.61")).startswith(b"HTTP/1.1 200 ")
        text = child.err.text()
        assert "Too many open files" not in text
        assert not [r["msg"] for r in child.err.records() if r["level"] == "error"]
        child.proc.send_signal(signal.SIGTERM)
        assert child.wait(30) == 0
    finally:
        child.stop()
