"""Credential checks are bounded apart from the client's handshake deadline."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from protocol.codec import SUBPROTOCOL_JSON
from protocol.messages import Auth
from server.app import build_app
from server.auth import HandshakeInfo, Principal
from server.config import Settings
from server.serve import HubServer, uvicorn_config
from tests.hubtest import TokenAuthenticator, free_socket, hub_settings, principal, token_for


class GatedAuthenticator(TokenAuthenticator):
    """Holds every credential check until ``gate`` is set."""

    def __init__(self, users: dict[str, Principal]) -> None:
        super().__init__(users)
        self.gate = asyncio.Event()
        self.started = 0

    async def authenticate(self, auth: Auth, info: HandshakeInfo) -> Principal:
        self.started += 1
        await self.gate.wait()
        return await super().authenticate(auth, info)


@contextlib.asynccontextmanager
async def gated_hub(settings: Settings, auth: GatedAuthenticator) -> Any:
    app = build_app(settings, authenticator=auth)
    sock = free_socket()
    server = HubServer(
        uvicorn_config(settings, app, "127.0.0.1", sock.getsockname()[1]),
        app.state.components.hub,
    )
    server.config.install_signal_handlers = False  # type: ignore[attr-defined]
    task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
    async with asyncio.timeout(30):
        while not server.started:
            await asyncio.sleep(0.01)
    try:
        yield f"ws://127.0.0.1:{sock.getsockname()[1]}/ws"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)
        sock.close()


async def hello(url: str, user: str) -> ClientConnection:
    ws = await connect(url, subprotocols=[SUBPROTOCOL_JSON])  # type: ignore[list-item]
    auth = {"method": "token", "token": token_for(user)}
    await ws.send(json.dumps({"type": "hello", "id": 1, "auth": auth}))
    return ws


async def outcome(ws: ClientConnection) -> tuple[str, int | None]:
    reply = json.loads(await asyncio.wait_for(ws.recv(), 10))
    if reply["type"] == "welcome":
        return "welcome", None
    assert reply["retry_after_s"] > 0
    try:
        await asyncio.wait_for(ws.recv(), 10)
    except ConnectionClosed as exc:
        return reply["code"], exc.rcvd.code if exc.rcvd else None
    raise AssertionError("not closed")


async def test_checks_queue_past_the_handshake_deadline_and_the_excess_is_shed(
    tmp_path: Path,
) -> None:
    users = {f"u{i}": principal(f"u{i}") for i in range(5)}
    auth = GatedAuthenticator({token_for(u): p for u, p in users.items()})
    settings = hub_settings(
        tmp_path, ws_handshake_timeout_s=0.5, ws_auth_concurrency=1, ws_auth_queue_max=2
    )
    async with gated_hub(settings, auth) as url:
        sockets = [await hello(url, f"u{i}") for i in range(5)]
        shed = [await outcome(ws) for ws in sockets[3:]]  # 1 running + 2 waiting: 2 too many
        assert shed == [("unavailable", 1013)] * 2
        await asyncio.sleep(1.0)  # twice the handshake deadline: the waiting ones stay
        auth.gate.set()
        assert [await outcome(ws) for ws in sockets[:3]] == [("welcome", None)] * 3
        for ws in sockets:
            await ws.close()


async def test_a_check_longer_than_the_auth_timeout_closes_1013(tmp_path: Path) -> None:
    auth = GatedAuthenticator({token_for("u0"): principal("u0")})
    settings = hub_settings(tmp_path, ws_auth_timeout_s=1.0, ws_handshake_timeout_s=0.5)
    async with gated_hub(settings, auth) as url:
        ws = await hello(url, "u0")
        with pytest.raises(ConnectionClosed) as info:
            await asyncio.wait_for(ws.recv(), 10)
        assert info.value.rcvd is not None
        assert (info.value.rcvd.code, info.value.rcvd.reason) == (1013, "authentication timed out")
