"""``medhub serve`` start-up and stop, as a real process: the banner means bound, an address in
use fails at once, a second SIGTERM forces the exit, the data folder is private, the default
Origin allow-list follows the served port, and the descriptor limit is fitted."""

from __future__ import annotations

import asyncio
import resource
import signal
import socket
import stat
import time
from pathlib import Path

import httpx
import pytest
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.asyncio.client import connect

from protocol.codec import SUBPROTOCOL_JSON
from server.accounts import csrf, totp
from server.config import load_settings
from server.limits import (
    MIN_WS_CONNECTIONS,
    DescriptorError,
    UvicornMismatch,
    check_uvicorn_internals,
    headroom,
    plan_descriptors,
    reserved_descriptors,
)
from server.serve import EXIT_CANNOT_LISTEN, EXIT_FORCED, EXIT_UNSUPPORTED
from server.startup import served_origins
from tests.accountstest import PASSWORD, secret_of
from tests.hubtest import Client
from tests.pg import PostgresServer
from tests.server.serveproc import BANNER, Child, medhub_env, run
from tests.services import free_port

START_S = 60.0  # a cold start imports everything and migrates: generous, not a measurement
INF = resource.RLIM_INFINITY


# -- the descriptor budget, as a pure function ---------------------------------------------


def test_soft_limit_is_raised_to_fit_when_the_hard_limit_allows() -> None:
    plan = plan_descriptors(1024, 1_048_576, 20_000, reserved=109)
    assert plan.soft_limit == 20_000 + 2_000 + 109
    assert plan.raises(1024)
    assert (plan.ws_max_connections, plan.max_sockets) == (20_000, 22_000)


def test_cap_is_lowered_when_the_hard_limit_is_too_small() -> None:
    plan = plan_descriptors(1024, 20_000, 20_000, reserved=109)
    assert plan.soft_limit == 20_000
    assert plan.ws_max_connections == 20_000 - 109 - headroom(20_000 - 109)
    assert plan.max_sockets + 109 <= 20_000
    plan = plan_descriptors(512, 512, 20_000, reserved=109)
    assert not plan.raises(512)
    assert plan.ws_max_connections == 512 - 109 - 64
    assert plan.max_sockets == 512 - 109


def test_a_cap_that_fits_is_kept_and_the_limit_left_alone() -> None:
    plan = plan_descriptors(1024, 1024, 500, reserved=109)
    assert plan == type(plan)(1024, 500, 564)
    assert not plan.raises(1024)
    assert plan_descriptors(INF, INF, 20_000, 109).soft_limit == INF
    assert plan_descriptors(1024, INF, 20_000, 109).soft_limit == 22_109


def test_too_few_descriptors_refuse_to_start() -> None:
    with pytest.raises(DescriptorError, match="ulimit -n"):
        plan_descriptors(150, 150, 20_000, reserved=109)


@pytest.mark.parametrize("soft", [200, 256, 1000, 1024, 4096, 20_000, 65_536])
@pytest.mark.parametrize("ws_max", [50, 640, 5_000, 20_000])
def test_every_plan_fits_its_limit(soft: int, ws_max: int) -> None:
    reserved = 109
    try:
        plan = plan_descriptors(soft, soft, ws_max, reserved)
    except DescriptorError:
        assert soft - reserved < MIN_WS_CONNECTIONS + 64
        return
    assert plan.ws_max_connections <= ws_max
    assert plan.ws_max_connections >= MIN_WS_CONNECTIONS
    assert plan.ws_max_connections + headroom(plan.ws_max_connections) <= plan.max_sockets
    assert plan.max_sockets + reserved <= plan.soft_limit <= soft


def test_reserve_grows_with_the_pool_and_the_broker() -> None:
    base = load_settings(environ={})
    bigger = load_settings(environ={}, overrides={"db_pool_size": 20, "broker": "redis"})
    assert reserved_descriptors(bigger) > reserved_descriptors(base) >= 64


# -- uvicorn's internals -------------------------------------------------------------------


def test_installed_uvicorn_has_what_the_hub_uses() -> None:
    check_uvicorn_internals()


def test_a_protocol_without_an_attribute_we_use_is_refused() -> None:
    class NoCloseSent(WebSocketsSansIOProtocol):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)  # type: ignore[arg-type]
            del self.close_sent

    with pytest.raises(UvicornMismatch, match=r"NoCloseSent\.close_sent") as info:
        check_uvicorn_internals(ws_class=NoCloseSent)
    assert "uvicorn>=0.54,<0.55" in str(info.value)

    class Renamed(HttpToolsProtocol):
        def __getattribute__(self, name: str) -> object:
            if name == "handle_websocket_upgrade":
                raise AttributeError(name)
            return super().__getattribute__(name)

    with pytest.raises(UvicornMismatch, match=r"Renamed\.handle_websocket_upgrade"):
        check_uvicorn_internals(http_class=Renamed)


# -- the process ---------------------------------------------------------------------------


def test_banner_means_bound_and_the_data_folder_is_private(tmp_path: Path) -> None:
    data = tmp_path / "var"
    data.mkdir(mode=0o755)
    data.chmod(0o755)  # as a release without the fix left it
    (data / "old.db").write_bytes(b"x")
    (data / "old.db").chmod(0o644)
    port = free_port()
    child = Child(["serve", "--port", str(port)], medhub_env(data))
    try:
        child.out.wait_for(BANNER, START_S)
        # The banner is out: the port answers now, without a retry.
        assert httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
        listening = child.err.wait_for('"listening"', 5)
        ready = child.err.wait_for('"hub ready"', 5)
        assert child.err.lines.index(ready) < child.err.lines.index(listening)
        tightened = child.err.wait_for("made private", 5)
        assert "old.db" in tightened
        assert stat.S_IMODE(data.stat().st_mode) == 0o700
        files = sorted(p.name for p in data.iterdir())
        assert {"medhub.db", "secrets", "old.db"} <= set(files)
        for name in files:
            assert stat.S_IMODE((data / name).stat().st_mode) == 0o600, name
        child.proc.send_signal(signal.SIGTERM)
        assert child.wait(30) == 0
    finally:
        child.stop()


def test_migrate_creates_a_private_folder_and_database(tmp_path: Path) -> None:
    data = tmp_path / "deep" / "var"
    run(["migrate"], medhub_env(data))
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert stat.S_IMODE((data / "medhub.db").stat().st_mode) == 0o600


def test_address_in_use_fails_at_once_with_one_line(tmp_path: Path) -> None:
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    try:
        child = Child(["serve", "--port", str(port)], medhub_env(tmp_path / "var"))
        assert child.wait(START_S) == EXIT_CANNOT_LISTEN
    finally:
        holder.close()
    assert child.out.lines == []  # no banner
    plain = [line for line in child.err.lines if not line.startswith("{")]
    assert plain == [f"medhub: cannot listen on 127.0.0.1:{port}: address already in use"]
    assert "hub ready" not in child.err.text()
    assert not (tmp_path / "var" / "secrets").exists()  # nothing started


def test_second_sigterm_forces_exit_while_the_database_is_down(tmp_path: Path) -> None:
    pg = PostgresServer()  # our own: this test stops it
    try:
        pg.start()
        env = medhub_env(tmp_path / "var", database_url=pg.url)
        run(["migrate"], env)
        port = free_port()
        child = Child(["serve", "--port", str(port)], env)
        try:
            child.out.wait_for(BANNER, START_S)
            pg.stop()
            # A refused cookie handshake (no Origin) records an audit entry the writer
            # cannot commit: it retries with backoff, so close() waits for ever.
            asyncio.run(_refused_cookie_hello(port))
            child.err.wait_for("write transaction failed", 10)
            child.proc.send_signal(signal.SIGTERM)
            child.err.wait_for("draining", 10)
            child.proc.send_signal(signal.SIGTERM)
            forced_at = time.monotonic()
            assert child.wait(5) == EXIT_FORCED
            assert time.monotonic() - forced_at < 5
            (line,) = [r for r in child.err.records() if r["msg"].startswith("second signal")]
            assert line["level"] == "warning"
            assert line["audit_unwritten"] >= 1
        finally:
            child.stop()
    finally:
        pg.stop()


async def _refused_cookie_hello(port: int) -> None:
    url = f"ws://127.0.0.1:{port}/ws"
    async with connect(url, subprotocols=[SUBPROTOCOL_JSON]) as ws:  # type: ignore[list-item]
        reply = await Client(ws, binary=False).request(
            {"type": "hello", "id": "h", "auth": {"method": "cookie"}}
        )
        assert reply["type"] == "error"


def test_default_origins_follow_the_served_port(tmp_path: Path) -> None:
    port = free_port()  # an ephemeral port, never 8000
    env = medhub_env(tmp_path / "var", argon2_time_cost=1, argon2_memory_kib=1024)
    run(["migrate"], env)
    created = run(["admin", "create-superadmin", "--name", "Ada", "--email", "ada@a.example"], env)
    lines = created.stdout.splitlines()
    code = lines[lines.index(next(x for x in lines if "enrolment code" in x)) + 1].strip()
    child = Child(["serve", "--port", str(port)], env)
    try:
        child.out.wait_for(BANNER, START_S)
        origin = f"http://127.0.0.1:{port}"
        assert origin in served_origins("127.0.0.1", port)
        asyncio.run(_enrol_and_open_socket(port, origin, code))
        # Another port's origin is still refused.
        r = httpx.post(
            f"{origin}/api/v1/login",
            json={"email": "ada@a.example", "password": PASSWORD},
            headers={"origin": "http://127.0.0.1:8000"},
        )
        assert r.status_code == 403
        assert r.json()["error"]["code"] == "origin_refused"
    finally:
        child.proc.send_signal(signal.SIGTERM)
        child.wait(30)
        child.stop()


async def _enrol_and_open_socket(port: int, origin: str, code: str) -> None:
    headers = {"origin": origin}
    async with httpx.AsyncClient(base_url=f"{origin}/api/v1", headers=headers) as http:
        r = await http.post("/invitations/accept", json={"token": code, "password": PASSWORD})
        assert r.status_code == 200, r.text
        body = r.json()
        now = time.time()
        mfa = totp.code_at(secret_of(body["otpauth_uri"]), totp.step_at(now))
        r = await http.post("/mfa/enrol", json={"challenge": body["challenge"], "code": mfa})
        assert r.status_code == 200, r.text
        token = r.json()["token"]
    cookie = {"Cookie": f"{csrf.COOKIE_NAME}={token}", "Origin": origin}
    async with connect(
        f"ws://127.0.0.1:{port}/ws",
        subprotocols=[SUBPROTOCOL_JSON],  # type: ignore[list-item]
        additional_headers=cookie,
    ) as ws:
        hello = {"type": "hello", "id": "h", "auth": {"method": "cookie"}}
        welcome = await Client(ws, binary=False).request(hello)
        assert welcome["type"] == "welcome", welcome


def test_descriptor_limit_is_raised_or_the_cap_lowered_at_start(tmp_path: Path) -> None:
    settings = load_settings(environ={})
    reserved = reserved_descriptors(settings)
    # A hard limit above what is needed: the soft limit is raised, the cap kept.
    port = free_port()
    child = Child(
        ["serve", "--port", str(port)],
        medhub_env(tmp_path / "a", ws_max_connections=1000),
        nofile=(256, 4096),
    )
    try:
        child.out.wait_for(BANNER, START_S)
        limits = Path(f"/proc/{child.proc.pid}/limits").read_text()
        (row,) = [x for x in limits.splitlines() if x.startswith("Max open files")]
        assert row.split()[3:5] == [str(1000 + 100 + reserved), "4096"]
        assert "lowered" not in child.err.text()
        child.proc.send_signal(signal.SIGTERM)
        assert child.wait(30) == 0
    finally:
        child.stop()
    # A hard limit below it: the cap is lowered, with one warning.
    port = free_port()
    child = Child(
        ["serve", "--port", str(port)],
        medhub_env(tmp_path / "b", ws_max_connections=20000),
        nofile=(512, 512),
    )
    try:
        child.out.wait_for(BANNER, START_S)
        (warning,) = [r for r in child.err.records() if "lowered" in r["msg"]]
        assert warning["level"] == "warning"
        assert (
            warning["lowered_to"] == plan_descriptors(512, 512, 20000, reserved).ws_max_connections
        )
        child.proc.send_signal(signal.SIGTERM)
        assert child.wait(30) == 0
    finally:
        child.stop()
    # Too few for even a small cap: refused, one line.
    child = Child(
        ["serve", "--port", str(free_port())], medhub_env(tmp_path / "c"), nofile=(150, 150)
    )
    assert child.wait(START_S) == EXIT_UNSUPPORTED
    plain = [line for line in child.err.lines if not line.startswith("{")]
    assert len(plain) == 1
    assert plain[0].startswith("medhub: cannot start: the file-descriptor limit")
    assert child.out.lines == []
