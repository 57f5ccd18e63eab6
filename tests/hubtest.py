"""Helpers for tests that run a real hub under a real uvicorn server on a free port."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
from websockets.asyncio.client import ClientConnection, connect

from protocol.codec import SUBPROTOCOL_JSON, SUBPROTOCOL_MSGPACK, JsonCodec, MsgpackCodec
from protocol.errors import ErrorCode
from protocol.messages import Auth
from server.app import Components, build_app
from server.auth import AuthError, HandshakeInfo, Principal
from server.capability import Capability
from server.config import Settings, load_settings
from server.serve import HubServer, uvicorn_config


class TokenAuthenticator:
    """Test-only authenticator: a fixed map of bearer tokens to principals."""

    def __init__(self, users: Mapping[str, Principal]) -> None:
        self.users = dict(users)

    async def authenticate(self, auth: Auth, info: HandshakeInfo) -> Principal:
        if auth.method == "token" and auth.token in self.users:
            return self.users[auth.token]
        raise AuthError(ErrorCode.AUTH_FAILED, "unknown test token")


def token_for(user: str) -> str:
    return f"test-token-{user}".ljust(24, "x")


def principal(user: str, org: str = "org-a", role: str = "practitioner") -> Principal:
    return Principal(user_id=user, org_id=org, role=role, session_id=f"sess-{user}")


def free_socket(port: int = 0) -> socket.socket:
    """A loopback socket bound to ``port`` (0: a free one), not listening yet."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    return sock


def hub_settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"data_dir": str(tmp_path / "var"), "log_json": True}
    values.update(overrides)
    return load_settings(environ={}, overrides=values)


@dataclass
class RunningHub:
    server: HubServer
    components: Components
    port: int
    task: asyncio.Task[None]

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v1"


@contextlib.asynccontextmanager
async def run_hub(
    settings: Settings,
    users: Mapping[str, Principal] | None = None,
    *,
    port: int = 0,
    capabilities: list[type[Capability]] | None = None,
) -> AsyncIterator[RunningHub]:
    """Start the hub on a loopback port (default: a free one); stop it (gracefully) on exit.

    With ``users``, sockets authenticate with test tokens (:func:`token_for`);
    without, the hub uses its real authenticator (the accounts sidecar's).
    ``port`` lets a test restart a hub where its clients expect it;
    ``capabilities`` replaces the composition list (default: the real one).
    """
    authenticator = (
        None if users is None else TokenAuthenticator({token_for(u): p for u, p in users.items()})
    )
    app = build_app(settings, authenticator=authenticator, capabilities=capabilities)
    sock = free_socket(port)
    port = sock.getsockname()[1]
    server = HubServer(uvicorn_config(settings, app, "127.0.0.1", port), app.state.components.hub)
    server.config.install_signal_handlers = False  # type: ignore[attr-defined]
    loop = asyncio.get_running_loop()
    task = loop.create_task(server.serve(sockets=[sock]))
    deadline = loop.time() + 30
    while not server.started:  # uvicorn offers no start event: poll, with a deadline
        if task.done():
            task.result()
        assert loop.time() < deadline, "hub did not start within 30 s"
        await asyncio.sleep(0.01)
    try:
        yield RunningHub(server, app.state.components, port, task)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)
        sock.close()


class Client:
    """A minimal protocol client over a real socket (the SDK comes later)."""

    def __init__(self, ws: ClientConnection, binary: bool) -> None:
        self.ws = ws
        self.codec: MsgpackCodec | JsonCodec = MsgpackCodec() if binary else JsonCodec()

    async def send(self, data: Any) -> None:
        await self.ws.send(self.codec.encode_raw(data))

    async def recv(self, timeout: float = 5.0) -> dict[str, Any]:
        frame = await asyncio.wait_for(self.ws.recv(), timeout)
        raw = self.codec.decode_raw(frame)
        assert isinstance(raw, dict)
        return raw

    async def recv_type(self, kind: str, timeout: float = 5.0) -> dict[str, Any]:
        """The next message of type ``kind``, skipping heartbeats."""
        while True:
            msg = await self.recv(timeout)
            if msg["type"] == kind:
                return msg
            if msg["type"] != "heartbeat":
                raise AssertionError(f"expected {kind}, got {msg}")

    async def request(self, data: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
        await self.send(data)
        reply = await self.recv(timeout)
        while reply["type"] == "heartbeat":
            reply = await self.recv(timeout)
        assert reply.get("id") == data.get("id"), reply
        return reply


@contextlib.asynccontextmanager
async def client(
    hub: RunningHub,
    user: str | None = None,
    *,
    binary: bool = True,
    origin: str | None = None,
) -> AsyncIterator[Client]:
    """Connect (and authenticate as ``user`` when given)."""
    proto = SUBPROTOCOL_MSGPACK if binary else SUBPROTOCOL_JSON
    headers = {"Origin": origin} if origin else None
    async with connect(
        hub.url,
        subprotocols=[proto],
        additional_headers=headers,
        max_size=2**22,
        ping_interval=None,
    ) as ws:  # type: ignore[list-item]
        c = Client(ws, binary)
        if user is not None:
            welcome = await c.request(
                {"type": "hello", "id": "h", "auth": {"method": "token", "token": token_for(user)}}
            )
            assert welcome["type"] == "welcome", welcome
        yield c


def to_builtins(obj: Any) -> Any:
    return msgspec.to_builtins(obj)


def close_code(info: Any) -> int | None:
    """The close code the server sent, from a ``pytest.raises(ConnectionClosed)`` info."""
    rcvd = info.value.rcvd
    return None if rcvd is None else int(rcvd.code)
