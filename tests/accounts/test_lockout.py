"""Brute force: growing locks, the same answer when locked, reset on success, caps."""

from __future__ import annotations

import asyncio

import pytest

from server.accounts import totp
from server.accounts.errors import ApiError
from server.accounts.lockout import Lockout
from server.accounts.passwords import HasherBusyError
from server.accounts.store import User
from server.broker import MemoryBroker
from tests.accountstest import PASSWORD, Env, FakeClock, enrol, login

WRONG = {"error": {"code": "auth_failed", "message": "wrong email or password"}}


async def _fail(http, email: str, n: int) -> None:  # type: ignore[no-untyped-def]
    for _ in range(n):
        r = await http.post("/login", json={"email": email, "password": "Wrong-password-1"})
        assert r.status_code == 401
        assert r.json() == WRONG


async def test_lock_grows_and_answers_like_a_wrong_password(env: Env, org_id: str) -> None:
    async with env.client() as http:
        u = await enrol(http, env.accounts, org_id, "practitioner", "l1@a.example", env.clock())
        await _fail(http, u.email, 5)  # the 5th failure locks for 1 minute
        locked = await http.post("/login", json={"email": u.email, "password": PASSWORD})
        assert locked.status_code == 401
        assert locked.json() == WRONG
        env.clock.advance(61)
        await _fail(http, u.email, 5)  # second lock: 5 minutes
        env.clock.advance(61)
        r = await http.post("/login", json={"email": u.email, "password": PASSWORD})
        assert r.json() == WRONG  # still locked after 1 minute
        env.clock.advance(300)
        r = await login(http, u.email, u.secret, env.clock())
        assert r.status_code == 200, r.text
        # success reset the count and the level: 4 failures do not lock
        await _fail(http, u.email, 4)
        env.clock.advance(30)
        r = await login(http, u.email, u.secret, env.clock())
        assert r.status_code == 200, r.text
    actions = env.audit.actions()
    assert actions.count("lockout") == 2
    assert actions.count("unlock") == 1
    assert actions.count("login_failed") == 5 + 1 + 5 + 1 + 4


async def test_lock_durations_follow_the_schedule() -> None:
    clock = FakeClock()
    broker = MemoryBroker()
    await broker.start()
    lock = Lockout(broker, threshold=5, schedule_s=(60, 300, 900), clock=clock)
    durations = []
    for _ in range(20):
        outcome = await lock.failure("acct", "10.0.0.1")
        if outcome.locked_for_s:
            durations.append(outcome.locked_for_s)
    assert durations == [60, 300, 900, 900]
    assert (await lock.state("acct", None)).locked
    clock.advance(901)
    assert not (await lock.state("acct", None)).locked
    await broker.close()


async def test_hourly_cap_per_account_and_per_ip() -> None:
    clock = FakeClock()
    broker = MemoryBroker()
    await broker.start()
    lock = Lockout(broker, threshold=1000, max_per_hour=100, ip_max_per_hour=150, clock=clock)
    for _ in range(100):
        await lock.failure("acct", "10.0.0.1")
    state = await lock.state("acct", "10.0.0.2")
    assert state.locked
    assert state.reason == "hourly_cap"
    for i in range(50):
        await lock.failure(f"other{i}", "10.0.0.1")
    state = await lock.state("fresh", "10.0.0.1")
    assert state.locked
    assert state.reason == "ip_cap"
    assert not (await lock.state("fresh", "10.0.0.3")).locked
    await broker.close()


async def test_counters_hold_across_nodes(env: Env, org_id: str) -> None:
    """Two nodes sharing a broker backend share the counters."""
    node2 = MemoryBroker(backend=env.broker.backend)
    await node2.start()
    a = Lockout(env.broker, clock=env.clock)
    b = Lockout(node2, clock=env.clock)
    for i in range(5):
        await (a if i % 2 else b).failure("shared", None)
    assert (await a.state("shared", None)).locked
    assert (await b.state("shared", None)).locked
    await node2.close()


async def test_concurrent_guesses_cannot_pass_the_threshold(
    env: Env, org_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """50 wrong passwords, then 50 wrong codes, at once: at most ``threshold`` verified."""
    svc = env.accounts.service
    threshold = svc.lockout.threshold
    async with env.client() as http:
        u = await enrol(http, env.accounts, org_id, "practitioner", "race@a.example", env.clock())
    verified: list[str] = []
    real_verify, real_check = svc.hasher.verify, svc.check_code

    async def verify(stored: str | None, password: str) -> bool:
        if stored is not None:  # not the dummy work done for refused attempts
            verified.append("password")
        return await real_verify(stored, password)

    async def check_code(user: User, code: str | None, recovery: str | None) -> bool:
        verified.append("code")
        return await real_check(user, code, recovery)

    monkeypatch.setattr(svc.hasher, "verify", verify)
    monkeypatch.setattr(svc, "check_code", check_code)

    async def guess(i: int) -> str:
        try:
            await svc.login_password(u.email, f"Wrong-password-{i}", "10.0.0.9")
        except ApiError as exc:
            return exc.code
        return "ok"

    answers = await asyncio.gather(*(guess(i) for i in range(50)))
    assert set(answers) == {"auth_failed"}
    assert verified.count("password") == threshold
    assert env.audit.actions().count("lockout") == 1

    # the same for TOTP guesses on one challenge, once the first lock is over
    env.clock.advance(61)
    challenge = await svc.login_password(u.email, PASSWORD, "10.0.0.9")
    verified.clear()

    async def code_guess(i: int) -> str:
        try:
            await svc.login_mfa(challenge, f"{i:06d}", None, "10.0.0.9")
        except ApiError as exc:
            return exc.code
        return "ok"

    valid = {totp.code_at(u.secret, totp.step_at(env.clock()) + d) for d in (-1, 0, 1)}
    wrong = [i for i in range(60) if f"{i:06d}" not in valid][:50]
    answers = await asyncio.gather(*(code_guess(i) for i in wrong))
    assert set(answers) == {"mfa_failed"}
    assert verified.count("code") == threshold
    assert env.audit.actions().count("lockout") == 2


async def test_a_busy_hasher_does_not_use_up_attempts(
    env: Env, org_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An attempt that could not be verified (503) gives its slot back."""
    svc = env.accounts.service
    async with env.client() as http:
        u = await enrol(http, env.accounts, org_id, "practitioner", "busy@a.example", env.clock())

        async def busy(stored: str | None, password: str) -> bool:
            raise HasherBusyError

        with monkeypatch.context() as patched:
            patched.setattr(svc.hasher, "verify", busy)
            for _ in range(3 * svc.lockout.threshold):
                r = await http.post("/login", json={"email": u.email, "password": PASSWORD})
                assert r.json()["error"]["code"] == "unavailable"
        r = await login(http, u.email, u.secret, env.clock(), step_offset=1)
        assert r.status_code == 200, r.text


async def test_every_spelling_of_an_email_counts_against_one_lockout(env: Env, org_id: str) -> None:
    """Case and Unicode variants find the same account, so they share its counter."""
    async with env.client() as http:
        u = await enrol(http, env.accounts, org_id, "practitioner", "spell@a.example", env.clock())
        variants = ["SPELL@a.example", "spell@A.EXAMPLE", "\uff53pell@a.example", "Spell@a.example"]
        for variant in variants:
            await _fail(http, variant, 1)
        await _fail(http, u.email, 1)  # the 5th failure, whatever the spelling: locked
        r = await http.post("/login", json={"email": u.email, "password": PASSWORD})
        assert r.json() == WRONG
    assert env.audit.actions().count("lockout") == 1
