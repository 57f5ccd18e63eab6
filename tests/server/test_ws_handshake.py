"""The WebSocket handshake and round trips over a real socket to a real uvicorn server."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from protocol.codec import SUBPROTOCOL_MSGPACK
from tests.hubtest import Client, client, close_code, hub_settings, principal, run_hub, token_for

USERS = {"alice": principal("alice"), "bob": principal("bob")}


@pytest.mark.parametrize("binary", [True, False], ids=["msgpack", "json"])
async def test_handshake_and_round_trip(tmp_path: Path, binary: bool) -> None:
    async with run_hub(hub_settings(tmp_path), USERS) as hub, client(hub, binary=binary) as c:
        welcome = await c.request(
            {"type": "hello", "id": 1, "auth": {"method": "token", "token": token_for("alice")}}
        )
        assert welcome["type"] == "welcome"
        assert welcome["identity"] == {"user": "alice", "role": "practitioner", "org": "org-a"}
        assert welcome["protocol"] == 1
        assert welcome["limits"]["max_frame_bytes"] == 65536
        reply = await c.request({"type": "ping", "id": "p-1"})
        assert reply["type"] == "result"
        assert reply["data"]["time"] > 1.7e9


async def test_unknown_subprotocol_is_refused(tmp_path: Path) -> None:
    async with run_hub(hub_settings(tmp_path), USERS) as hub:
        with pytest.raises(InvalidStatus) as info:
            async with connect(hub.url, subprotocols=["chat.v9"]):  # type: ignore[list-item]
                pass
        assert info.value.response.status_code == 403
        with pytest.raises(InvalidStatus):
            async with connect(hub.url):
                pass


async def test_origin_allow_list(tmp_path: Path) -> None:
    settings = hub_settings(tmp_path, allowed_origins=["https://app.example"])
    async with run_hub(settings, USERS) as hub:
        with pytest.raises(InvalidStatus) as info:
            async with client(hub, origin="https://evil.example"):
                pass
        assert info.value.response.status_code == 403
        async with client(hub, "alice", origin="https://app.example") as c:
            assert (await c.request({"type": "ping", "id": 2}))["type"] == "result"


async def test_handshake_deadline_closes_4001(tmp_path: Path) -> None:
    async with (
        run_hub(hub_settings(tmp_path, ws_handshake_timeout_s=0.3), USERS) as hub,
        client(hub) as c,
    ):
        with pytest.raises(ConnectionClosed) as info:
            await c.recv(timeout=5)
        assert close_code(info) == 4001


async def test_bad_credentials_get_auth_failed_then_4003(tmp_path: Path) -> None:
    async with run_hub(hub_settings(tmp_path), USERS) as hub, client(hub, binary=False) as c:
        await c.send({"type": "hello", "id": "h", "auth": {"method": "token", "token": "n" * 32}})
        error = await c.recv()
        assert error == {
            "type": "error",
            "code": "auth_failed",
            "message": "authentication failed",
            "id": "h",
        }
        with pytest.raises(ConnectionClosed) as info:
            await c.recv()
        assert close_code(info) == 4003


async def test_requests_before_hello_are_refused_but_socket_survives(tmp_path: Path) -> None:
    async with run_hub(hub_settings(tmp_path), USERS) as hub, client(hub) as c:
        reply = await c.request({"type": "ping", "id": 7})
        assert reply["code"] == "handshake_required"
        welcome = await c.request(
            {"type": "hello", "id": 8, "auth": {"method": "token", "token": token_for("bob")}}
        )
        assert welcome["type"] == "welcome"
        again = await c.request(
            {"type": "hello", "id": 9, "auth": {"method": "token", "token": token_for("bob")}}
        )
        assert again["code"] == "already_authenticated"


async def test_idle_socket_gets_heartbeats_then_4008(tmp_path: Path) -> None:
    settings = hub_settings(tmp_path, ws_heartbeat_interval_s=0.2, ws_idle_timeout_s=0.8)
    async with run_hub(settings, USERS) as hub, client(hub, "alice") as c:
        assert (await c.recv())["type"] == "heartbeat"
        with pytest.raises(ConnectionClosed) as info:
            while True:
                await c.recv()
        assert close_code(info) == 4008


async def test_answering_heartbeats_keeps_the_socket_open(tmp_path: Path) -> None:
    settings = hub_settings(tmp_path, ws_heartbeat_interval_s=0.1, ws_idle_timeout_s=0.4)
    async with run_hub(settings, USERS) as hub, client(hub, "alice") as c:
        for _ in range(10):  # about 1 s: more than twice the idle timeout
            assert (await c.recv())["type"] == "heartbeat"
            await c.send({"type": "heartbeat"})
        assert (await c.request({"type": "ping", "id": 1}))["type"] == "result"


async def test_connections_per_user_are_bounded(tmp_path: Path) -> None:
    settings = hub_settings(tmp_path, ws_max_connections_per_user=2)
    async with run_hub(settings, USERS) as hub, client(hub, "alice"), client(hub, "alice"):
        async with client(hub) as third:
            reply = await third.request(
                {
                    "type": "hello",
                    "id": "h",
                    "auth": {"method": "token", "token": token_for("alice")},
                }
            )
            assert reply["code"] == "too_many_connections"
            with pytest.raises(ConnectionClosed) as info:
                await third.recv()
            assert close_code(info) == 4030
        async with client(hub, "bob") as other:  # other users are not affected
            assert (await other.request({"type": "ping", "id": 1}))["type"] == "result"


async def test_frame_limits(tmp_path: Path) -> None:
    settings = hub_settings(tmp_path, ws_max_frame_bytes=8192, ws_hard_max_frame_bytes=65536)
    async with run_hub(settings, USERS) as hub, client(hub, "alice", binary=False) as c:
        await c.send({"type": "ping", "id": 1, "pad": "x" * 9000})
        # Over max_frame_bytes the frame is not decoded, so the error has no id.
        assert await c.recv() == {
            "type": "error",
            "code": "too_large",
            "message": "frame over max_frame_bytes",
        }
        small_but_over_type = {"type": "ping", "id": 2, "pad": "x" * 400}
        assert (await c.request(small_but_over_type))["code"] == "too_large"
        assert (await c.request({"type": "ping", "id": 3}))["type"] == "result"
        await c.ws.send("x" * 70000)
        with pytest.raises(ConnectionClosed) as info:
            await c.recv()
        assert close_code(info) == 1009


async def test_health_ready_and_metrics(tmp_path: Path) -> None:
    async with run_hub(hub_settings(tmp_path), USERS) as hub:
        async with client(hub, "alice") as c:
            await c.request({"type": "ping", "id": 1})
            await c.request({"type": "nope", "id": 2})
            async with httpx.AsyncClient(base_url=hub.http) as http:
                assert (await http.get("/healthz")).text == "ok\n"
                ready = await http.get("/readyz")
                assert ready.status_code == 200
                checks = ready.json()
                core = ("database", "broker", "audit", "accepting", "task.hub-ticker")
                assert {k: checks[k] for k in core} == dict.fromkeys(core, True)
                assert all(checks.values()), checks  # every capability and loop too
                text = (await http.get("/metrics")).text
        assert "medhub_ws_connections 1.0" in text
        assert 'medhub_ws_messages_in_total{type="ping"} 1.0' in text
        assert 'medhub_ws_errors_total{code="unknown_type"} 1.0' in text
        assert 'medhub_ws_request_seconds_count{type="ping"} 1.0' in text
        # counters the components keep in memory are exported too
        for name in (
            "medhub_audit_backlog ", "medhub_audit_written_total ",
            "medhub_broker_listener_restarts_total 0.0", "medhub_channel_gap_fills_total 0.0",
            "medhub_channel_publish_failures_total 0.0", "medhub_auth_cache_entries ",
            "medhub_presence_refresh_seconds_count ", "medhub_integrity_failures_total 0.0",
        ):  # fmt: skip
            assert name in text, name


async def test_refused_handshake_is_counted(tmp_path: Path) -> None:
    async with run_hub(hub_settings(tmp_path), USERS) as hub:
        with pytest.raises(InvalidStatus):
            async with connect(hub.url, subprotocols=["x"]):  # type: ignore[list-item]
                pass
        async with connect(hub.url, subprotocols=[SUBPROTOCOL_MSGPACK]) as ws:  # type: ignore[list-item]
            await ws.close()
        await asyncio.sleep(0)
        text = hub.components.metrics.render().decode()
        assert 'medhub_ws_handshake_failures_total{reason="subprotocol"} 1.0' in text


async def test_audit_source_reads_every_forwarded_for_line(tmp_path: Path) -> None:
    """A proxy appending its own header line cannot be fooled by a forged first line."""
    import sqlalchemy as sa

    from server.store.schema import audit_log

    settings = hub_settings(tmp_path, trusted_proxies=["127.0.0.1"])
    async with run_hub(settings, USERS) as hub:
        forged = [("X-Forwarded-For", "6.6.6.6"), ("X-Forwarded-For", "203.0.113.9")]
        async with connect(
            hub.url,
            subprotocols=[SUBPROTOCOL_MSGPACK],
            additional_headers=forged,  # type: ignore[list-item]
        ) as ws:
            c = Client(ws, binary=True)
            await c.request(
                {
                    "type": "hello",
                    "id": "h",
                    "auth": {"method": "token", "token": token_for("alice")},
                }
            )
        await hub.components.audit.flush()
        async with hub.components.database.begin() as conn:
            rows = (
                await conn.execute(
                    sa.select(audit_log.c.source).where(audit_log.c.action == "ws_connect")
                )
            ).all()
        assert [r.source for r in rows] == ["203.0.113.9"]
