"""Graceful shutdown: clients are told to go away, queued frames are flushed first."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed

from protocol.messages import Event
from tests.hubtest import client, close_code, hub_settings, principal, run_hub

USERS = {"alice": principal("alice"), "bob": principal("bob")}


async def test_sigterm_sends_going_away_after_queued_frames(tmp_path: Path) -> None:
    settings = hub_settings(tmp_path, shutdown_retry_after_s=3.0)
    async with run_hub(settings, USERS) as hub:
        async with client(hub, "alice") as a, client(hub, "bob", binary=False) as b:
            conns = list(hub.components.hub.connections)
            for seq in range(200):  # frames queued just before the signal
                for conn in conns:
                    conn.send(Event(ch="test:1", seq=seq, kind="test.tick", data={"n": seq}))
            hub.server.handle_exit(signal.SIGTERM, None)
            for c in (a, b):
                seqs = []
                while True:
                    msg = await c.recv()
                    if msg["type"] != "event":
                        break
                    seqs.append(msg["seq"])
                assert seqs == list(range(200))
                assert msg == {"type": "going_away", "retry_after_s": 3.0}
                with pytest.raises(ConnectionClosed) as info:
                    await c.recv()
                assert close_code(info) == 1012
            await asyncio.wait_for(hub.task, 10)  # the server stops by itself
        assert hub.server.should_exit


async def test_new_sockets_are_refused_while_draining(tmp_path: Path) -> None:
    async with run_hub(hub_settings(tmp_path), USERS) as hub:
        await hub.components.hub.shutdown(grace_s=1.0)
        assert hub.components.hub.accepting is False
        async with client(hub) as c:
            with pytest.raises(ConnectionClosed) as info:
                await c.recv()
            assert close_code(info) == 1012


async def test_full_node_closes_new_sockets_1013(tmp_path: Path) -> None:
    settings = hub_settings(tmp_path, ws_max_connections=2)
    async with (
        run_hub(settings, USERS) as hub,
        client(hub, "alice"),
        client(hub, "bob"),
        client(hub) as third,
    ):
        with pytest.raises(ConnectionClosed) as info:
            await third.recv()
        assert close_code(info) == 1013


async def test_a_peer_that_stops_reading_cannot_hold_its_socket(tmp_path: Path) -> None:
    """A flushing close stuck behind a full TCP buffer is cut short, then dropped."""
    settings = hub_settings(
        tmp_path, ws_close_timeout_s=0.5, ws_send_queue_max_messages=4096,
        ws_send_queue_max_bytes=512 * 1024 * 1024,
    )  # fmt: skip
    async with run_hub(settings, USERS) as hub, client(hub, "alice"), client(hub, "bob") as bob:
        hub_ = hub.components.hub
        (conn,) = hub_.by_user["alice"]
        blob = "z" * 60000
        for seq in range(600):  # ~36 MB: far more than the socket buffers hold
            conn.send(Event(ch="test:1", seq=seq, kind="test.blob", data=blob))
        # Still queued (the flush runs on the next loop step); the peer reads nothing.
        conn.close(4010, "session revoked", flush=True)  # waits for a queue that cannot drain
        conn.close(1012, "going away")  # must cut it short
        assert not conn.queue
        deadline = asyncio.get_running_loop().time() + 10
        while conn in hub_.connections:
            assert asyncio.get_running_loop().time() < deadline, "socket never dropped"
            await asyncio.sleep(0.05)
        assert "alice" not in hub_.by_user
        assert (await bob.request({"type": "ping", "id": 1}))["type"] == "result"
