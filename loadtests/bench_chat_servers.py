"""The two baselines of the chat fan-out benchmark (:mod:`loadtests.bench_chat`).

``python -m loadtests.bench_chat_servers broadcast --port N``,
``... socketio --port N`` or ``... relay --port N``; each answers
``GET /healthz`` with 200 and stops on SIGTERM.

- ``broadcast``: a plain ``websockets.asyncio.server`` on uvloop with the
  hub's transport settings (compression off, protocol pings off). The first
  frame of a socket is a msgpack ``hello`` with ``role`` ``receiver`` or
  ``sender``. For every frame a sender sends, the server calls
  ``websockets.broadcast(receivers, frame)`` with the same bytes, then
  answers the sender with a 1-byte ack (the senders bound their in-flight
  messages with it, as they do with the hub's ``result``). Nothing is decoded.
- ``socketio``: python-socketio ``AsyncServer`` (ASGI) served by uvicorn with
  the hub's uvicorn settings (uvloop, httptools, ``websockets-sansio``,
  permessage-deflate off). A client connecting with auth
  ``{"role": "receiver"}`` enters room ``conv``; the ``msg`` event handler
  does ``await sio.emit("chat", data, room="conv")`` and returns ``1``, which
  Socket.IO sends back as the ack of the sender's message.
- ``relay``: the baseline of the chat latency section: the same ``websockets``
  server speaking just enough of the hub's protocol for the same client
  (msgpack): ``hello`` gets a ``welcome``-shaped map, ``chat.sync`` puts the
  socket among the followers (``result``), ``chat.send`` gets the next seq,
  an ``event`` map with the hub's fields is encoded once and
  ``websockets.broadcast`` to the followers, then the sender gets its
  ``result``. No storage, no authorisation, no audit: the fan-out alone.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import msgpack

from loadtests.bench_server import raise_nofile_limit

ROOM = "conv"
#: The broadcast server's answer to each sender frame.
ACK = b"\x01"
MAX_FRAME_BYTES = 2**20


# -- websockets.broadcast ---------------------------------------------------------------
async def serve_broadcast(host: str, port: int) -> None:
    """Serve the broadcast baseline until SIGTERM or SIGINT."""
    import websockets
    from websockets.asyncio.server import ServerConnection
    from websockets.exceptions import ConnectionClosed

    from loadtests.plain_server import serve_until_signalled

    receivers: set[ServerConnection] = set()

    async def handler(ws: ServerConnection) -> None:
        try:
            hello = msgpack.unpackb(await ws.recv())
            role = hello.get("role") if isinstance(hello, dict) else None
            await ws.send(ACK)
            if role == "receiver":
                receivers.add(ws)
                try:
                    await ws.wait_closed()
                finally:
                    receivers.discard(ws)
                return
            async for frame in ws:
                websockets.broadcast(receivers, frame)
                await ws.send(ACK)
        except ConnectionClosed:
            pass

    await serve_until_signalled(host, port, handler, banner=None)


# -- relay (the hub's chat protocol, fan-out only) ------------------------------------------
async def serve_relay(host: str, port: int) -> None:
    """Serve the relay baseline until SIGTERM or SIGINT."""
    import time

    import websockets
    from websockets.asyncio.server import ServerConnection
    from websockets.exceptions import ConnectionClosed

    from loadtests.plain_server import _welcome, serve_until_signalled

    followers: set[ServerConnection] = set()
    last_seq = 0

    async def handler(ws: ServerConnection) -> None:
        nonlocal last_seq
        try:
            hello = msgpack.unpackb(await ws.recv())
            await ws.send(msgpack.packb(_welcome(hello)))
            user = "u-relay"
            async for frame in ws:
                msg = msgpack.unpackb(frame)
                kind = msg.get("type") if isinstance(msg, dict) else None
                if kind == "chat.send":
                    last_seq += 1
                    seq = last_seq
                    data = {
                        "seq": seq, "kind": "message", "sender": user,
                        "client_msg_id": msg.get("client_msg_id"), "at": int(time.time() * 1000),
                        "text": msg.get("text"), "version": 1,
                    }  # fmt: skip
                    event = {
                        "type": "event", "ch": f"conv:{msg.get('conv')}", "seq": seq,
                        "kind": "message", "data": data,
                    }  # fmt: skip
                    websockets.broadcast(followers, msgpack.packb(event))
                    reply = {"seq": seq, "duplicate": False}
                    await ws.send(msgpack.packb({"type": "result", "id": msg["id"], "data": reply}))
                elif kind == "chat.sync":
                    followers.add(ws)
                    reply = {"last_seq": last_seq, "caught_up": True}
                    await ws.send(msgpack.packb({"type": "result", "id": msg["id"], "data": reply}))
        except ConnectionClosed:
            pass
        finally:
            followers.discard(ws)

    await serve_until_signalled(host, port, handler, banner=None)


# -- python-socketio ----------------------------------------------------------------------
def socketio_app() -> Any:
    """The ASGI app: python-socketio on /socket.io/, /healthz beside it."""
    import socketio

    sio = socketio.AsyncServer(
        async_mode="asgi", transports=["websocket"], logger=False, engineio_logger=False
    )

    @sio.event
    async def connect(sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        if isinstance(auth, dict) and auth.get("role") == "receiver":
            await sio.enter_room(sid, ROOM)

    @sio.on("msg")
    async def msg(sid: str, data: Any) -> int:
        await sio.emit("chat", data, room=ROOM)
        return 1

    async def health(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        ok = scope["path"] == "/healthz"
        await send(
            {
                "type": "http.response.start",
                "status": 200 if ok else 404,
                "headers": [(b"content-type", b"text/plain")],
            }
        )
        await send({"type": "http.response.body", "body": b"ok\n" if ok else b""})

    return socketio.ASGIApp(sio, other_asgi_app=health)


def serve_socketio(host: str, port: int) -> None:
    """Serve the Socket.IO baseline with the hub's uvicorn settings until SIGTERM."""
    import uvicorn

    config = uvicorn.Config(
        socketio_app(),
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        ws="websockets-sansio",
        ws_max_size=MAX_FRAME_BYTES,
        ws_per_message_deflate=False,
        ws_ping_interval=None,
        ws_ping_timeout=None,
        lifespan="off",
        log_config=None,
        log_level="warning",
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=2,
    )
    uvicorn.Server(config).run()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtests.bench_chat_servers")
    parser.add_argument("kind", choices=("broadcast", "socketio", "relay"))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--data-dir", help="ignored; accepted so every server takes the same flags")
    args = parser.parse_args(argv)
    raise_nofile_limit()
    if args.kind in ("broadcast", "relay"):
        import uvloop

        serve = serve_broadcast if args.kind == "broadcast" else serve_relay
        uvloop.run(serve(args.host, args.port))
    else:
        serve_socketio(args.host, args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
