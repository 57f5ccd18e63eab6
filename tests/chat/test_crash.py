"""A node killed with SIGKILL in the middle of chat traffic loses no acknowledged message,
and every stored message has its audit entry (they commit in one transaction)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from pathlib import Path
from typing import Any

import msgspec
import sqlalchemy as sa
from websockets.asyncio.client import ClientConnection, connect

from protocol.codec import SUBPROTOCOL_MSGPACK
from server.chat.tables import chat_message
from server.store.db import Database
from server.store.schema import audit_log
from tests.accountstest import FakeClock, accounts_env, enrol
from tests.server.serveproc import BANNER, Child, medhub_env, run
from tests.services import free_port

SENDS = 400
KILL_AFTER_ACKS = 120
WINDOW = 16  # sends in flight per socket


async def hello(port: int, token: str) -> ClientConnection:
    ws = await connect(
        f"ws://127.0.0.1:{port}/ws", subprotocols=[SUBPROTOCOL_MSGPACK], ping_interval=None
    )  # type: ignore[list-item]
    await ws.send(
        msgspec.msgpack.encode(
            {"type": "hello", "id": 0, "auth": {"method": "token", "token": token}}
        )
    )
    welcome = msgspec.msgpack.decode(await ws.recv())
    assert welcome["type"] == "welcome", welcome
    return ws


async def call(ws: ClientConnection, rid: int, msg_type: str, **fields: Any) -> dict[str, Any]:
    await ws.send(msgspec.msgpack.encode({"type": msg_type, "id": rid, **fields}))
    while True:
        msg = msgspec.msgpack.decode(await ws.recv())
        if msg.get("id") == rid:
            return dict(msg)


def start(data_dir: Path, port: int) -> Child:
    env = medhub_env(data_dir, ws_rate_per_s=100000.0, ws_rate_burst=100000)
    child = Child(["serve", "--port", str(port)], env)
    child.out.wait_for(BANNER, 60)
    return child


async def stored(url: str, conv: str) -> tuple[set[int], set[str]]:
    """Seqs of the conversation's messages, and target ids of chat_message create entries."""
    async with Database(url) as db, db.begin(readonly=True) as conn:
        seqs = {
            int(r.seq)
            for r in await conn.execute(
                sa.select(chat_message.c.seq).where(chat_message.c.conv_id == conv)
            )
        }
        targets = {
            str(r.target_id)
            for r in await conn.execute(
                sa.select(audit_log.c.target_id).where(
                    audit_log.c.action == "create", audit_log.c.target_type == "chat_message"
                )
            )
        }
    return seqs, targets


async def test_sigkill_mid_traffic_keeps_every_acked_message_and_its_audit_entry(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "var"
    url = f"sqlite+aiosqlite:///{data_dir / 'medhub.db'}"
    env = medhub_env(data_dir)
    run(["migrate"], env)
    async with accounts_env(tmp_path, db_url=url, data_dir=str(data_dir)) as acc:
        acc.clock = FakeClock(time.time())
        acc.accounts.service.clock = acc.clock
        org = await acc.accounts.service.store.create_org("clinic", acc.accounts.service.now_us())
        async with acc.client() as http:
            alice = await enrol(http, acc.accounts, org.id, "practitioner", "a@x.org", acc.clock())
            bob = await enrol(http, acc.accounts, org.id, "practitioner", "b@x.org", acc.clock())

    port = free_port()
    child = start(data_dir, port)
    acked: dict[str, int] = {}
    try:
        ws = await hello(port, alice.token)
        conv = (await call(ws, 1, "chat.create", kind="direct", members=[bob.user_id]))["data"][
            "conv"
        ]
        pending: dict[int, str] = {}
        sent = 0
        killed = False
        with contextlib.suppress(Exception):  # the socket dies with the node
            while sent < SENDS or pending:
                while sent < SENDS and len(pending) < WINDOW:
                    rid = 100 + sent
                    pending[rid] = f"m{sent}"
                    await ws.send(
                        msgspec.msgpack.encode(
                            {"type": "chat.send", "id": rid, "conv": conv,
                             "client_msg_id": f"m{sent}", "text": f"message {sent}"}
                        )
                    )  # fmt: skip
                    sent += 1
                reply = msgspec.msgpack.decode(await asyncio.wait_for(ws.recv(), 10))
                cid = pending.pop(reply.get("id"), None)
                if cid is not None and reply["type"] == "result":
                    acked[cid] = reply["data"]["seq"]
                if len(acked) >= KILL_AFTER_ACKS and not killed:
                    os.kill(child.proc.pid, signal.SIGKILL)  # mid-traffic: sends in flight
                    killed = True
        assert killed
        child.wait(10)
    finally:
        child.stop()

    seqs, targets = await stored(url, conv)
    assert len(acked) >= KILL_AFTER_ACKS
    assert set(acked.values()) <= seqs  # no acknowledged message is lost
    assert {f"{conv}.{s}" for s in seqs} <= targets  # every stored one has its audit entry

    # The clients retry what was not acknowledged, on a restarted node: what was
    # committed but not acknowledged comes back as a duplicate, and still has its entry.
    child = start(data_dir, port)
    try:
        ws = await hello(port, alice.token)
        duplicates = 0
        for i in range(SENDS):
            cid = f"m{i}"
            if cid in acked:
                continue
            r = await call(ws, 10_000 + i, "chat.send", conv=conv, client_msg_id=cid, text="x")
            assert r["type"] == "result", r
            duplicates += r["data"]["duplicate"]
        await ws.close()
        child.proc.send_signal(signal.SIGTERM)
        assert child.wait(30) == 0
    finally:
        child.stop()
    seqs, targets = await stored(url, conv)
    assert seqs == set(range(1, SENDS + 1))
    assert {f"{conv}.{s}" for s in seqs} <= targets
    verify = run(["audit", "verify"], env)
    assert "intact" in verify.stdout, verify.stdout
