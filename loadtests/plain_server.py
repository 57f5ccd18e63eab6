"""The baseline for the WebSocket benchmarks: a plain ``websockets`` server, no hub.

``python -m loadtests.plain_server --port N`` serves ``/ws`` with
``websockets.asyncio.server`` on uvloop, with the hub's transport settings
(subprotocol ``medhub.v1.msgpack``, permessage-deflate off, protocol pings off,
1 MiB frames). It speaks just enough of the protocol for the benchmark client
to do the same work against both servers: the first frame (a ``hello``) gets
a ``welcome``-shaped map, and each ``ping`` gets ``result`` with
``{"time": ...}``; anything else gets an ``error``. Every frame is decoded and
encoded with msgpack. ``GET /healthz`` answers 200 for readiness polling.
"""

from __future__ import annotations

import argparse
import asyncio
import http
import secrets
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgpack
import uvloop
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from loadtests.bench_server import TOKEN_PREFIX, raise_nofile_limit
from protocol.codec import SUBPROTOCOL_MSGPACK

MAX_FRAME_BYTES = 2**20


def _welcome(hello: Any) -> dict[str, Any]:
    token = ""
    if isinstance(hello, dict) and isinstance(hello.get("auth"), dict):
        token = str(hello["auth"].get("token") or "")
    number = token.removeprefix(TOKEN_PREFIX).rstrip("x")
    return {
        "type": "welcome",
        "id": hello.get("id") if isinstance(hello, dict) else None,
        "session": secrets.token_hex(8),
        "node": "plain",
        "protocol": 1,
        "heartbeat_s": 25.0,
        "idle_timeout_s": 60.0,
        "limits": {
            "max_frame_bytes": 65536,
            "rate_per_s": 1_000_000.0,
            "rate_burst": 1_000_000,
            "send_queue_max_messages": 1024,
        },
        "identity": {"user": f"u{number}", "role": "practitioner", "org": "bench"},
    }


def _answer(message: Any) -> dict[str, Any]:
    if isinstance(message, dict) and message.get("type") == "ping":
        return {"type": "result", "id": message.get("id"), "data": {"time": time.time()}}
    return {"type": "error", "code": "unknown_type", "message": "plain server: ping only"}


async def handler(ws: ServerConnection) -> None:
    """Answer the hello, then every ping, until the client closes."""
    try:
        first = msgpack.unpackb(await ws.recv(), raw=False)
        await ws.send(msgpack.packb(_welcome(first)))
        async for frame in ws:
            await ws.send(msgpack.packb(_answer(msgpack.unpackb(frame, raw=False))))
    except ConnectionClosed:
        pass


def process_request(connection: ServerConnection, request: Request) -> Response | None:
    """``/healthz`` answers 200 without a WebSocket upgrade."""
    if request.path == "/healthz":
        return connection.respond(http.HTTPStatus.OK, "ok\n")
    return None


async def serve_until_signalled(
    host: str,
    port: int,
    connection_handler: Callable[[ServerConnection], Awaitable[None]] = handler,
    banner: str | None = "plain websockets server",
) -> None:
    """Serve ``connection_handler`` (msgpack subprotocol, ``/healthz``, compression and
    pings off) until SIGTERM or SIGINT, then close every socket and return."""
    async with serve(
        connection_handler,
        host,
        port,
        subprotocols=[SUBPROTOCOL_MSGPACK],  # type: ignore[list-item]
        process_request=process_request,
        compression=None,
        ping_interval=None,
        max_size=MAX_FRAME_BYTES,
    ) as server:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, server.close)
        if banner:
            print(f"{banner} on ws://{host}:{port}/ws", flush=True)
        await server.wait_closed()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtests.plain_server", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--data-dir", help="ignored; accepted so both servers take the same flags")
    args = parser.parse_args(argv)
    raise_nofile_limit()
    uvloop.run(serve_until_signalled(args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
