"""The SDK when things go wrong: a hub restart, a socket killed mid-request, a revoked session.

Every test runs a real hub with the real accounts authenticator and real sign-in
(password + TOTP, then a WebSocket ticket), as ``test_sdk.py`` does.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import WebSocketException

from clients.sdk import (
    MedhubClient,
    MedhubError,
    SessionEndedError,
    TransportError,
    TypedEvent,
)
from server.accounts import totp
from server.config import Settings
from tests.accountstest import PASSWORD, Enrolled, accounts_settings, enrol
from tests.hubtest import RunningHub, run_hub

WAIT_S = 15.0  # bound on anything a test waits for; a pass takes well under a second each


@dataclass
class Pair:
    """Two enrolled practitioners of one organisation, signed in, with a direct conversation."""

    hub: RunningHub
    alice: MedhubClient
    bob: MedhubClient
    a: Enrolled
    b: Enrolled
    conv: str


def fast_settings(tmp_path: Path) -> Settings:
    return accounts_settings(
        tmp_path, ws_rate_per_s=10000.0, ws_rate_burst=10000, shutdown_grace_s=1.0
    )


@contextlib.asynccontextmanager
async def signed_in_pair(
    hub: RunningHub, *, use_ticket: bool = True, **client_options: object
) -> AsyncIterator[Pair]:
    """Enrol alice and bob, sign both in through the SDK, connect, open a conversation."""
    org = (await hub.components.accounts.admin.create_org(None, "Clinique A")).id
    async with httpx.AsyncClient(base_url=hub.api) as http:
        now = time.time()
        a = await enrol(http, hub.components.accounts, org, "practitioner", "a@x.test", now)
        b = await enrol(http, hub.components.accounts, org, "practitioner", "b@x.test", now)
    options: dict[str, object] = {"backoff_initial_s": 0.05, "backoff_max_s": 0.5}
    options.update(client_options)
    alice = MedhubClient(hub.http, use_ticket=use_ticket, **options)  # type: ignore[arg-type]
    bob = MedhubClient(hub.http, use_ticket=use_ticket, **options)  # type: ignore[arg-type]
    step = totp.step_at(time.time()) + 1  # enrolment spent the current step
    await alice.sign_in(a.email, PASSWORD, totp.code_at(a.secret, step))
    await bob.sign_in(b.email, PASSWORD, totp.code_at(b.secret, step))
    try:
        await alice.connect()
        await bob.connect()
        conv = await alice.create_conversation("direct", [b.user_id])
        await bob.follow(conv)
        yield Pair(hub, alice, bob, a, b, conv)
    finally:
        await alice.close()
        await bob.close()


async def next_message(client: MedhubClient) -> TypedEvent:
    async def first() -> TypedEvent:
        async for ev in client.events():
            if ev.kind == "message":
                return ev
        raise AssertionError("events ended")

    return await asyncio.wait_for(first(), WAIT_S)


async def test_events_resume_after_the_hub_restarts(tmp_path: Path) -> None:
    """Hub down (the ticket request is refused), then a new hub on the same port and data."""
    settings = fast_settings(tmp_path)
    down_errors: list[MedhubError] = []
    hub_down = asyncio.Event()

    def on_retry(error: MedhubError, delay_s: float) -> None:
        assert delay_s <= 0.5  # capped by backoff_max_s
        if isinstance(error.__cause__, httpx.ConnectError):  # nobody listens on the port
            down_errors.append(error)
            hub_down.set()

    stack = contextlib.AsyncExitStack()
    async with stack:
        first_hub = await stack.enter_async_context(run_hub(settings))
        port = first_hub.port
        pair = await stack.enter_async_context(signed_in_pair(first_hub, on_retry=on_retry))
        assert await pair.alice.send_message(pair.conv, "before", client_msg_id="m-1") == 1
        assert (await next_message(pair.bob)).seq == 1

        # Stop the first hub only (the clients stay open and keep trying).
        await first_hub_stop(first_hub)
        await asyncio.wait_for(hub_down.wait(), WAIT_S)
        assert all(isinstance(e, TransportError) and e.retryable for e in down_errors)
        assert not pair.bob.connected

        async with run_hub(settings, port=port):
            # send_message waits for the reconnect, then commits once.
            assert await pair.alice.send_message(pair.conv, "after", client_msg_id="m-2") == 2
            ev = await next_message(pair.bob)
            assert (ev.seq, ev.data.text) == (2, "after")
            # Exactly once: nothing from before the restart comes back, nothing twice.
            assert await pair.alice.send_message(pair.conv, "marker") == 3
            assert (await next_message(pair.bob)).seq == 3
            assert pair.bob.connected
            assert pair.bob.reconnects >= 2


async def first_hub_stop(hub: RunningHub) -> None:
    """Stop a hub started by ``run_hub`` before its context exits (as SIGTERM would)."""
    hub.server.should_exit = True
    await asyncio.wait_for(hub.task, WAIT_S)


@pytest.mark.parametrize("steps", [0, 1, 2, 3])
async def test_socket_killed_during_a_request(tmp_path: Path, steps: int) -> None:
    """However far a request got when its socket dies, only the SDK's own errors come out.

    The socket is killed ``steps`` loop steps after the call starts: the request is
    not written yet, written into a dead transport, or sent on a socket that knows
    it is closed while the client has not noticed yet (steps 1-2 raised
    ``websockets.exceptions.ConnectionClosedError`` before the fix).
    """
    async with run_hub(fast_settings(tmp_path)) as hub, signed_in_pair(hub) as pair:
        alice = pair.alice

        # send_message: retried across the reconnect with the same client id.
        sending = asyncio.ensure_future(
            alice.send_message(pair.conv, f"k{steps}", client_msg_id=f"k{steps}")
        )
        for _ in range(steps):
            await asyncio.sleep(0)  # one loop step each: ordering, not timing
        alice.kill_socket()
        try:
            seq = await asyncio.wait_for(sending, WAIT_S)
        except WebSocketException as exc:
            raise AssertionError(f"a websockets error escaped the SDK: {exc!r}") from exc
        assert seq == 1
        assert await alice.send_message(pair.conv, f"k{steps}", client_msg_id=f"k{steps}") == 1

        # request(): not retried; it answers, or fails with the SDK's retryable error.
        await alice.connect()  # waits for the background reconnect
        asking = asyncio.ensure_future(alice.request("chat.list"))
        for _ in range(steps):
            await asyncio.sleep(0)
        alice.kill_socket()
        outcome: object
        try:
            outcome = await asyncio.wait_for(asking, WAIT_S)
        except (TransportError, WebSocketException) as exc:
            outcome = exc
        if isinstance(outcome, BaseException):
            assert isinstance(outcome, TransportError), f"not the SDK's error: {outcome!r}"
            assert outcome.retryable
        else:
            assert isinstance(outcome, dict)
            assert [c["last_seq"] for c in outcome["conversations"]] == [1]
        await alice.connect()
        assert [c["last_seq"] for c in await alice.conversations()] == [1]

        page, _ = await pair.bob.history(pair.conv)
        assert [(e.seq, e.text) for e in page] == [(1, f"k{steps}")]


@pytest.mark.parametrize("use_ticket", [True, False], ids=["ticket", "token"])
async def test_revoked_session_ends_events(tmp_path: Path, use_ticket: bool) -> None:
    async with (
        run_hub(fast_settings(tmp_path)) as hub,
        signed_in_pair(hub, use_ticket=use_ticket) as pair,
    ):
        bob = pair.bob
        assert await pair.alice.send_message(pair.conv, "hi") == 1
        async with httpx.AsyncClient(base_url=hub.api) as http:
            r = await http.post("/logout", headers={"Authorization": f"Bearer {bob.token}"})
            assert r.status_code == 200, r.text

        seen: list[int] = []

        async def drain() -> None:
            async for ev in bob.events():
                if ev.kind == "message":
                    seen.append(ev.seq)

        with pytest.raises(SessionEndedError) as info:
            await asyncio.wait_for(drain(), WAIT_S)
        assert seen == [1]  # what arrived before the revocation is still delivered
        assert not info.value.retryable
        assert info.value.code == "session_ended"  # the hub closed the socket 4010
        # Every later call fails at once with the same error instead of waiting.
        with pytest.raises(SessionEndedError):
            await asyncio.wait_for(bob.send_message(pair.conv, "still there?"), WAIT_S)
        with pytest.raises(SessionEndedError):
            await asyncio.wait_for(drain(), WAIT_S)

        # A new client with the dead token is refused at connect(), not after a timeout.
        late = MedhubClient(hub.http, token=bob.token, use_ticket=use_ticket)
        try:
            with pytest.raises(SessionEndedError):
                await late.connect(timeout_s=WAIT_S)
        finally:
            await late.close()


async def test_connect_to_nothing_is_a_transport_error(tmp_path: Path) -> None:
    """No hub at all: connect() gives up after its timeout with the cause attached."""
    from tests.hubtest import free_socket

    with free_socket() as sock:  # bound, never listening: connections are refused
        port = sock.getsockname()[1]
        errors: list[MedhubError] = []
        client = MedhubClient(
            f"http://127.0.0.1:{port}",
            token="t" * 43,
            backoff_initial_s=0.05,
            backoff_max_s=0.2,
            on_retry=lambda error, _delay: errors.append(error),
        )
        try:
            with pytest.raises(TransportError) as info:
                await client.connect(timeout_s=0.5)
        finally:
            await client.close()
        assert info.value.retryable
        assert isinstance(info.value.__cause__, TransportError)
        assert isinstance(info.value.__cause__.__cause__, httpx.ConnectError)
        assert errors  # every failed attempt was reported, then retried
