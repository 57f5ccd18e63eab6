"""Bad input over real sockets: errors with stable codes, survival, isolation."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import msgpack
import pytest
from websockets.exceptions import ConnectionClosed

from tests.hubtest import client, close_code, hub_settings, principal, run_hub

USERS = {"alice": principal("alice"), "bob": principal("bob")}


def malformed_frames(n: int, seed: int = 7) -> list[tuple[bytes, str]]:
    """``n`` malformed msgpack frames, each with the error code it must get."""
    rng = random.Random(seed)
    kinds: list[tuple[bytes, str]] = [
        (msgpack.packb({"type": "ping", "id": 1})[:-1], "bad_frame"),  # truncated
        (b"\xc1", "bad_frame"),  # never-used byte
        (msgpack.packb(msgpack.ExtType(5, b"abc")), "bad_frame"),  # ext type
        (msgpack.packb({1: "x"}), "bad_frame"),  # non-string key
        (msgpack.packb([1, 2, 3]), "bad_request"),  # not a map
        (msgpack.packb({"id": 3}), "bad_request"),  # no type
        (msgpack.packb({"type": 42, "id": 3}), "bad_request"),  # type not a string
        (msgpack.packb({"type": "no.such", "id": 4}), "unknown_type"),
        (msgpack.packb({"type": "ping", "id": 5, "extra": True}), "bad_request"),
        (msgpack.packb({"type": "ping", "id": "x" * 65}), "bad_request"),
        (msgpack.packb({"type": "ping", "id": 6, "pad": "y" * 300}), "too_large"),
        (
            msgpack.packb({"type": "hello", "id": 7, "auth": {"method": "token"}}),
            "already_authenticated",
        ),
        (b"", "bad_frame"),
    ]
    return [kinds[rng.randrange(len(kinds))] for _ in range(n)]


async def test_ten_thousand_malformed_frames_do_not_disturb_anyone(tmp_path: Path) -> None:
    """One socket sends 10,000 bad frames; each gets its code; bob never notices."""
    settings = hub_settings(
        tmp_path, ws_rate_per_s=100000.0, ws_rate_burst=100000, ws_abuse_max_errors=100000
    )
    frames = malformed_frames(10_000)
    async with (
        run_hub(settings, USERS) as hub,
        client(hub, "alice") as bad,
        client(hub, "bob") as good,
    ):
        got: list[str] = []

        async def read_errors() -> None:
            while len(got) < len(frames):
                msg = await bad.recv(timeout=30)
                if msg["type"] == "error":
                    got.append(msg["code"])

        async def send_garbage() -> None:
            for frame, _ in frames:
                await bad.ws.send(frame)

        async def converse() -> int:
            n = 0
            while len(got) < len(frames):
                reply = await good.request({"type": "ping", "id": n})
                assert reply["type"] == "result", reply
                n += 1
            return n

        reader = asyncio.create_task(read_errors())
        talker = asyncio.create_task(converse())
        await send_garbage()
        await asyncio.wait_for(reader, 60)
        exchanged = await asyncio.wait_for(talker, 10)
        assert got == [code for _, code in frames]
        assert exchanged > 0
        # Both sockets are still usable afterwards.
        assert (await bad.request({"type": "ping", "id": "after"}))["type"] == "result"
        assert (await good.request({"type": "ping", "id": "after"}))["type"] == "result"


async def test_json_socket_errors(tmp_path: Path) -> None:
    async with (
        run_hub(hub_settings(tmp_path), USERS) as hub,
        client(hub, "alice", binary=False) as c,
    ):
        cases: list[tuple[Any, str]] = [
            ("{not json", "bad_frame"),
            ('{"type":"ping","id":1,"x":NaN}', "bad_frame"),
            ("[" * 5000 + "]" * 5000, "bad_frame"),
            ('{"type":"ping","id":true}', "bad_request"),
        ]
        for frame, code in cases:
            await c.ws.send(frame)
            reply = await c.recv()
            assert reply["code"] == code, frame[:40]
        await c.ws.send(b"\x01\x02")  # binary frame on the JSON subprotocol
        assert (await c.recv())["code"] == "bad_frame"


async def test_invalid_utf8_text_frame_closes_1007(tmp_path: Path) -> None:
    """RFC 6455 requires failing the connection; other users do not notice."""
    async with (
        run_hub(hub_settings(tmp_path), USERS) as hub,
        client(hub, "alice", binary=False) as c,
        client(hub, "bob") as other,
    ):
        # The sans-I/O layer does not check UTF-8 on send: write the raw frame.
        c.ws.protocol.send_text(b'{"type":"\xff"}')
        for chunk in c.ws.protocol.data_to_send():
            c.ws.transport.write(chunk)
        with pytest.raises(ConnectionClosed) as info:
            await c.recv()
        assert close_code(info) == 1007
        assert (await other.request({"type": "ping", "id": 1}))["type"] == "result"


async def test_rate_limit_then_abuse_close(tmp_path: Path) -> None:
    settings = hub_settings(
        tmp_path, ws_rate_per_s=1.0, ws_rate_burst=5, ws_abuse_max_errors=20, ws_abuse_window_s=60.0
    )
    async with (
        run_hub(settings, USERS) as hub,
        client(hub, "alice") as c,
        client(hub, "bob") as other,
    ):
        for i in range(4):  # the hello took the fifth token of the burst
            assert (await c.request({"type": "ping", "id": i}))["type"] == "result"
        limited = await c.request({"type": "ping", "id": 99})
        assert limited["code"] == "rate_limited"
        assert 0 < limited["retry_after_s"] <= 1.0
        codes = []
        with pytest.raises(ConnectionClosed) as info:
            for i in range(100):
                await c.send({"type": "ping", "id": 100 + i})
                codes.append((await c.recv())["code"])
        assert close_code(info) == 4029
        assert set(codes) == {"rate_limited"}
        assert 19 <= len(codes) <= 21
        assert (await other.request({"type": "ping", "id": 1}))["type"] == "result"


async def test_slow_consumer_is_closed_with_resume_hint(tmp_path: Path) -> None:
    """A client that stops reading is cut off; the others keep receiving."""
    from protocol.messages import Event

    settings = hub_settings(tmp_path, ws_send_queue_max_messages=64)
    async with (
        run_hub(settings, USERS) as hub,
        client(hub, "alice") as slow,
        client(hub, "bob") as fast,
    ):
        conns = {c.principal.user_id: c for c in hub.components.hub.connections if c.principal}
        blob = "z" * 60000
        # Push far more than the socket buffers plus the queue can hold.
        received = 0

        async def read_fast() -> None:
            nonlocal received
            while received < 400:
                msg = await fast.recv()
                if msg["type"] == "event":
                    assert msg["seq"] == received
                    received += 1

        reader = asyncio.create_task(read_fast())
        for seq in range(400):
            event = Event(ch="test:1", seq=seq, kind="test.blob", data=blob)
            conns["alice"].send(event)
            conns["bob"].send(event)
            while len(conns["bob"].queue) > 32:  # pace the producer by the fast reader only
                await asyncio.sleep(0.001)
        await asyncio.wait_for(reader, 30)
        seqs = []
        with pytest.raises(ConnectionClosed) as info:
            while True:
                msg = await slow.recv()
                seqs.append(msg["seq"])
        assert close_code(info) == 4009
        assert "resume" in info.value.rcvd.reason
        assert seqs == list(range(len(seqs)))  # what arrived is in order, with no hole
        assert len(seqs) < 400
        metrics = hub.components.metrics.render().decode()
        assert 'medhub_ws_queue_drops_total{policy="reliable"} 1.0' in metrics
