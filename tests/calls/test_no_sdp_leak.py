"""SDP and ICE candidates pass through the hub but never reach a log line or the database.

A whole call (invite with an offer, trickled candidates both ways, accept with
an answer, a renegotiation, refused malformed SDP and candidates, hang-up) is run
between real clients (one speaking JSON as the browser does, one msgpack) on a
real hub whose logging is configured as a node's with ``log_level=debug`` (the
most an operator can turn on); then every line the node wrote, every stored
row and the SQLite files' raw bytes are searched for the SDP's tell-tale lines.
"""

from __future__ import annotations

import io
import json
import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from protocol.calls import Signal
from server.logs import configure_logging
from tests.calls.helpers import open_party
from tests.calls.test_signalling import direct
from tests.hubtest import RunningHub

UFRAG = "Zq7LeakUfrag"
PWD = "leakcheckpwd0123456789ab"
FINGERPRINT = "sha-256 4F:1C:9A:77:0B:6E:D2:31:AA:55:10:EE:C3:98:7D:42"
HOST = "192.0.2.77"  # TEST-NET-1: appears nowhere but in these candidates


def sdp(origin: int) -> str:
    """A plausible SDP body carrying ICE credentials, a fingerprint and a candidate."""
    return (
        f"v=0\r\no=- {origin} 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
        "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\n"
        f"a=ice-ufrag:{UFRAG}\r\na=ice-pwd:{PWD}\r\na=fingerprint:{FINGERPRINT}\r\n"
        f"a=candidate:1 1 udp 2122260223 {HOST} 50{origin:03d} typ host\r\na=sendrecv\r\n"
    )


def trickled(n: int) -> bytes:
    line = f"candidate:{n} 1 udp 2122260223 {HOST} {41000 + n} typ host ufrag {UFRAG}"
    return json.dumps({"candidate": line, "sdpMid": "0", "sdpMLineIndex": 0}).encode()


OFFER, ANSWER, RENEGOTIATION = sdp(1), sdp(2), sdp(3)
#: What must appear in no log line and no stored row.
SECRETS = ("v=0", "a=candidate", "ice-ufrag", "ice-pwd", UFRAG, PWD, FINGERPRINT, HOST)


def leaks(text: str) -> list[str]:
    return [s for s in SECRETS if s in text]


def raw_leaks(database: Path) -> list[tuple[str, str]]:
    """(file, secret) for each secret in the raw bytes of the database, its WAL and journal."""
    files = [database, *database.parent.glob(database.name + "-*")]
    assert database.exists()
    return [(f.name, s) for f in files for s in SECRETS[1:] if s.encode() in f.read_bytes()]


@pytest.fixture
def node_log() -> Iterator[io.StringIO]:
    """What the node writes: ``configure_logging`` at debug (JSON lines), its stream
    redirected to a buffer; the process's logging is put back afterwards."""
    root = logging.getLogger()
    names = ("uvicorn", "uvicorn.error", "uvicorn.access", "websockets.client")
    saved = (root.handlers[:], root.level)
    loggers = [
        (lg, lg.handlers[:], lg.level, lg.propagate, lg.disabled)
        for lg in map(logging.getLogger, names)
    ]
    configure_logging("debug", json_lines=True)
    out = io.StringIO()
    (handler,) = [h for h in root.handlers if isinstance(h, logging.StreamHandler)]
    handler.setStream(out)
    # the test's own clients log their frames at debug: not the hub's lines
    logging.getLogger("websockets.client").setLevel(logging.WARNING)
    try:
        yield out
    finally:
        root.handlers[:], root.level = saved
        for lg, handlers, level, propagate, disabled in loggers:
            lg.handlers[:], lg.level, lg.propagate, lg.disabled = (
                handlers,
                level,
                propagate,
                disabled,
            )


def stored_text(database: Path) -> list[tuple[str, str, str]]:
    """Every text or blob value of every table, as (table, column, text)."""
    out = []
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            cursor = conn.execute(f'SELECT * FROM "{table}"')  # names from the schema
            columns = [d[0] for d in cursor.description]
            for row in cursor:
                for column, value in zip(columns, row, strict=True):
                    if isinstance(value, bytes):
                        value = value.decode("utf-8", "replace")
                    if isinstance(value, str):
                        out.append((table, column, value))
    return out


async def test_sdp_and_candidates_reach_no_log_line_and_no_stored_row(
    node_log: io.StringIO, hub: RunningHub
) -> None:
    conv = await direct(hub, "alice", "bob")
    alice = await open_party(hub, "alice", binary=False)  # JSON text frames, as the browser
    bob = await open_party(hub, "bob")
    try:
        # refused on the way in: the reply and the logs name the problem, not the SDP
        no_media = f"v=0\r\na=ice-ufrag:{UFRAG}\r\n"
        refused = await alice.call("call.invite", conv=conv, party="alice-dev-1", offer=no_media)
        assert refused["code"] == "bad_request"
        assert leaks(json.dumps(refused)) == []
        too_big = OFFER + "a=x" * 11000 + "\r\n"
        assert await alice.refused(
            "call.invite", conv=conv, party="alice-dev-1", offer=too_big
        ) in ("bad_request", "too_large")
        call = (await alice.ok("call.invite", conv=conv, party="alice-dev-1", offer=OFFER))["call"]
        assert (await bob.event("ring"))["data"]["offer"] == OFFER
        await alice.signal(Signal.CANDIDATE, call, trickled(0))
        await bob.ok("call.accept", call=call, party="bob-dev-01", answer=ANSWER)
        assert (await alice.event("accepted"))["data"]["answer"] == ANSWER
        await bob.signal(Signal.CANDIDATE, call, trickled(1))
        await bob.signal(Signal.END_OF_CANDIDATES, call, b"")
        await alice.signal(Signal.OFFER, call, RENEGOTIATION.encode())
        await bob.signal(Signal.ANSWER, call, ANSWER.encode())
        assert await bob.frame() == (Signal.CANDIDATE, call, trickled(0))
        assert await bob.frame() == (Signal.OFFER, call, RENEGOTIATION.encode())
        assert await alice.frame() == (Signal.CANDIDATE, call, trickled(1))
        assert await alice.frame() == (Signal.END_OF_CANDIDATES, call, b"")
        assert await alice.frame() == (Signal.ANSWER, call, ANSWER.encode())
        # malformed frames are refused, not relayed
        await alice.signal(Signal.OFFER, call, f"a=ice-ufrag:{UFRAG}\r\n".encode())
        assert (await alice.error())["code"] == "bad_request"
        await alice.signal(Signal.CANDIDATE, call, f"candidate ufrag {UFRAG}".encode())
        assert (await alice.error())["code"] == "bad_request"
        await alice.ok("call.hangup", call=call, reason="user_hangup")
        assert (await bob.event("ended"))["data"]["reason"] == "user_hangup"
    finally:
        await alice.close()
        await bob.close()

    lines = node_log.getvalue().splitlines()
    records = [json.loads(line) for line in lines]  # every line is the node's JSON
    # debug was on: the call's row was written under the log's eyes
    assert any("call_record" in r["msg"] for r in records)
    assert [(line, leaks(line)) for line in lines if leaks(line)] == []

    database = Path(hub.components.settings.effective_database_url.split("///", 1)[1])
    stored = stored_text(database)
    assert ("call_record", "id", call) in stored  # the scan reads the call's own row
    assert [(t, c, leaks(v)) for t, c, v in stored if leaks(v)] == []
    assert raw_leaks(database) == []
